-- wrk script: POST /v1/events with a 1 KiB `data` member (single events), or
-- POST /v1/events/batch with BATCH events per request when BATCH is set.
-- Usage: KEY=hrk_... [BATCH=100] wrk -t2 -c64 -d20s -s benches/ingest.lua http://127.0.0.1:8080
local key = os.getenv("KEY") or error("set KEY to a tenant API key")
local batch = tonumber(os.getenv("BATCH") or "0")
local filler = string.rep("x", 1024 - 40)
local event = '{"type":"order.created","location_id":"loc_1","data":{"order_id":"ord_1001","note":"' .. filler .. '"}}'

wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer " .. key
wrk.headers["Content-Type"] = "application/json"
if batch > 0 then
  wrk.path = "/v1/events/batch"
  local items = {}
  for i = 1, batch do items[i] = event end
  wrk.body = '{"events":[' .. table.concat(items, ",") .. ']}'
else
  wrk.path = "/v1/events"
  wrk.body = event
end

local non_2xx = 0
response = function(status, headers, body)
  if status ~= 202 and status ~= 200 then
    non_2xx = non_2xx + 1
    if non_2xx <= 3 then io.stderr:write("status " .. status .. ": " .. body .. "\n") end
  end
end

done = function(summary, latency, requests)
  local events = summary.requests * math.max(batch, 1)
  local seconds = summary.duration / 1e6
  io.write(string.format("requests/s %.0f  events/s %.0f  p50 %.2f ms  p99 %.2f ms  errors %d\n",
    summary.requests / seconds, events / seconds,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
