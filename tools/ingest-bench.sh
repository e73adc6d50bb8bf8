#!/usr/bin/env bash
# Ingest figures of `herald serve`: wrk against POST /v1/events (single events and
# batches), 64 keep-alive connections, 1 KiB `data`, each event durable before its 202.
#
# Usage: tools/ingest-bench.sh [--fanout] [--duration 20s] [--shards N] [--batch-scheduling BOOL]
#                              [--group-delay-us US]
#   --fanout   subscribe one webhook (to a loopback `herald sink`), so every event is
#              also delivered; without it, events are accepted and journaled only.
#   --batch-scheduling false   shard threads under the default policy (config key
#              `batch_scheduling`; default true).
#   --group-delay-us US   the journal's group commit window (config key
#              `[journal] group_delay_us`; default 1000): lower answers single events
#              sooner at the cost of more syncs.
# Needs wrk (apt-get install wrk); builds the release binary unless HERALD_BIN names one.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=20s
shards=0
fanout=0
batch=true
group_delay_us=1000
while [ $# -gt 0 ]; do
  case "$1" in
    --fanout) fanout=1 ;;
    --duration) duration="$2"; shift ;;
    --shards) shards="$2"; shift ;;
    --batch-scheduling) batch="$2"; shift ;;
    --group-delay-us) group_delay_us="$2"; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
bin=${HERALD_BIN:-target/release/herald}
[ -n "${HERALD_BIN:-}" ] || cargo build --release -q -p herald-cli
work=$(mktemp -d)
port=18080
sink_port=19000
admin=bench-admin-key-0123456789
cleanup() { kill "$server" "${sink:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
case "$batch" in true|false) ;; *) echo "--batch-scheduling takes true or false" >&2; exit 2 ;; esac
case "$group_delay_us" in ''|*[!0-9]*) echo "--group-delay-us takes a number of µs" >&2; exit 2 ;; esac
printf 'batch_scheduling = %s\n[journal]\ngroup_delay_us = %s\n' "$batch" "$group_delay_us" >"$work/herald.toml"
HERALD_ADMIN_KEY=$admin "$bin" serve --config "$work/herald.toml" --listen 127.0.0.1:$port --data-dir "$work/data" \
  --shards "$shards" --allow-loopback >"$work/serve.out" 2>"$work/serve.err" &
server=$!
trap cleanup EXIT
for _ in $(seq 100); do grep -q listening "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
api=http://127.0.0.1:$port
key=$(curl -sf -X POST $api/v1/tenants -H "Authorization: Bearer $admin" \
  -H 'Content-Type: application/json' -d '{"id":"bench"}' | sed -E 's/.*"api_key":"([^"]+)".*/\1/')
if [ $fanout = 1 ]; then
  "$bin" sink --listen 127.0.0.1:$sink_port >"$work/sink.out" 2>&1 &
  sink=$!
  sleep 0.5
  curl -sf -X POST $api/v1/webhooks -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
    -d "{\"url\":\"http://127.0.0.1:$sink_port/hooks\",\"events\":[\"*\"]}" >/dev/null
fi
echo "== single events, 64 connections, $duration (fanout=$fanout shards=$shards batch_scheduling=$batch group_delay_us=$group_delay_us)"
KEY=$key wrk -t2 -c64 -d"$duration" --latency -s benches/ingest.lua $api | tail -n 1
echo "== batches of 100, 64 connections, $duration"
KEY=$key BATCH=100 wrk -t2 -c64 -d"$duration" --latency -s benches/ingest.lua $api | tail -n 1
curl -s $api/metrics | grep -E "^herald_(pending_deliveries|events_accepted_total|journal_appended_bytes_total|journal_sync_duration_seconds_(sum|count))" || true
