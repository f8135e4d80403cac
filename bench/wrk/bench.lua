-- wrk script for the AuthGateway benchmark (bench/run).
--
-- Without BENCH_CYCLE_FILE every request is the same (wrk's precomputed request, the fastest path; the -H headers
-- given on the command line apply). With it, each request carries the next credential from that file, one per line:
--   BENCH_CYCLE_FILE     file of credentials (tokens or API keys), one per line
--   BENCH_CYCLE_HEADER   header that carries it (default Authorization)
--   BENCH_CYCLE_PREFIX   text before the credential (default "Bearer ")
--   BENCH_CYCLE_OFFSET   0-based line to start at, so consecutive runs use credentials not seen before
-- Always: done() prints one line `BENCH_RESULT {json}` that bench.py parses (latencies in microseconds).

local cycle_file = os.getenv("BENCH_CYCLE_FILE")

if cycle_file and cycle_file ~= "" then
  local values, count, index = {}, 0, 0
  local head, tail

  function init(args)
    for line in io.lines(cycle_file) do
      if #line > 0 then
        count = count + 1
        values[count] = line
      end
    end
    assert(count > 0, "BENCH_CYCLE_FILE holds no credentials: " .. cycle_file)
    -- Render the request once around a marker, then splice each credential in: no per-request formatting.
    local marker = "\1CREDENTIAL\1"
    local headers = {}
    for name, value in pairs(wrk.headers) do headers[name] = value end
    headers[os.getenv("BENCH_CYCLE_HEADER") or "Authorization"] = (os.getenv("BENCH_CYCLE_PREFIX") or "Bearer ") .. marker
    local raw = wrk.format(nil, nil, headers)
    local first, last = string.find(raw, marker, 1, true)
    head, tail = string.sub(raw, 1, first - 1), string.sub(raw, last + 1)
    index = (tonumber(os.getenv("BENCH_CYCLE_OFFSET") or "0") or 0) % count
  end

  function request()
    index = index + 1
    if index > count then index = 1 end
    return head .. values[index] .. tail
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,' ..
    '"timeouts":%d,"non_2xx":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
