#!/usr/bin/env bash
# WebSocket fan-out figures of `herald serve`: N stream clients on one tenant
# (GET /v1/ws), one publisher posting batches of 100 events over the REST API as fast
# as they are acknowledged. Prints a Markdown table: deliveries/s to all clients
# together and publish→client latency (p50, p99, max; from just before the batch is
# sent, so it includes the journal sync every event waits for).
#
# Usage: tools/ws-fanout.sh [--clients 1,10,100] [--events 20000]
# Needs only cargo: the server runs in-process (crates/herald-api/examples/ws_fanout.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release -q -p herald-api --example ws_fanout -- "$@"
