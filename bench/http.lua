-- wrk script for bench/http.py: the request method, a bound on requests, and a JSON summary.
-- Environment: WRK_METHOD (GET or POST), WRK_MAX_REQUESTS (per wrk thread; the run also ends at -d).

wrk.method = os.getenv("WRK_METHOD") or "GET"
if wrk.method == "POST" then
  wrk.headers["Content-Length"] = "0"
end
local limit = tonumber(os.getenv("WRK_MAX_REQUESTS") or "0")
local seen = 0

function response(status, headers, body)
  seen = seen + 1
  if limit > 0 and seen >= limit then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
