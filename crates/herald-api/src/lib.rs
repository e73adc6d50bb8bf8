//! Herald management REST API
#![forbid(unsafe_code)]
pub mod catalog;
