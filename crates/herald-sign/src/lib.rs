//! Webhook signature schemes (Standard Webhooks, ed25519, Stripe-style, Olo) with batched HMAC signing and receiver-side verification
#![forbid(unsafe_code)]
