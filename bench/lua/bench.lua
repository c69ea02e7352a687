-- One wrk script for every benchmarked endpoint (bench/load.py passes the arguments).
--
--   wrk ... -s bench/lua/bench.lua URL -- METHOD PATH MODE DATA_FILE THREADS PARTITION CHECK
--
-- MODE      none: no body, no token; body: each DATA_FILE line is a JSON body to POST;
--           bearer: each DATA_FILE line is an access token sent as `Authorization: Bearer`;
--           form: each DATA_FILE line is `AUTHORIZATION<TAB>FORM BODY` (/introspect: a client's Basic).
-- PARTITION 1: thread k takes lines k, k+T, k+2T… so no line is sent twice by two threads
--           (refresh tokens are single-use); 0: every thread rotates over every line.
-- CHECK     valid: a 200 must also say "valid": true (/checkToken answers 200 for invalid tokens);
--           active: a 200 must also say "active":true (/introspect likewise).
-- done() prints one line `BENCH_JSON {...}` that bench/load.py parses.

local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  local method, path, mode, data_file = args[1], args[2], args[3], args[4]
  local nthreads, partition = tonumber(args[5]), args[6] == "1"
  check_valid = args[7] == "valid"
  check_active = args[7] == "active"
  requests_ = {}
  if mode == "none" then
    requests_[1] = wrk.format(method, path)
  else
    local line_no = 0
    for line in io.lines(data_file) do
      if line ~= "" and (not partition or line_no % nthreads == tid) then
        local headers = {}
        local body = nil
        if mode == "body" then
          headers["Content-Type"] = "application/json"
          body = line
        elseif mode == "form" then
          local tab = string.find(line, "\t", 1, true)
          headers["Authorization"] = string.sub(line, 1, tab - 1)
          headers["Content-Type"] = "application/x-www-form-urlencoded"
          body = string.sub(line, tab + 1)
        else
          headers["Authorization"] = "Bearer " .. line
        end
        requests_[#requests_ + 1] = wrk.format(method, path, headers, body)
      end
      line_no = line_no + 1
    end
  end
  count_ = #requests_
  next_ = 0
  sent = 0
  non2xx = 0
  invalid = 0
  statuses = ""
  status_counts = {}
end

function request()
  -- wrk calls request() once before the run to check it; that call spends one line of thread 0.
  local req = requests_[(next_ % count_) + 1]
  next_ = next_ + 1
  sent = next_
  return req
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    status_counts[status] = (status_counts[status] or 0) + 1
    local parts = {}
    for code, n in pairs(status_counts) do
      parts[#parts + 1] = string.format('"%d": %d', code, n)
    end
    statuses = table.concat(parts, ", ")
  elseif check_valid and not string.find(body, '"valid"%s*:%s*true') then
    invalid = invalid + 1
  elseif check_active and not string.find(body, '"active"%s*:%s*true') then
    invalid = invalid + 1
  end
end

function done(summary, latency, requests)
  local non2xx_total, invalid_total, sent_total, lines, wrapped = 0, 0, 0, 0, 0
  local merged = {}
  for _, thread in ipairs(threads) do
    non2xx_total = non2xx_total + thread:get("non2xx")
    invalid_total = invalid_total + thread:get("invalid")
    sent_total = sent_total + thread:get("sent")
    lines = lines + thread:get("count_")
    wrapped = wrapped + math.max(0, thread:get("sent") - thread:get("count_"))
    local s = thread:get("statuses")
    if s ~= "" then
      merged[#merged + 1] = s
    end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
      .. '"non2xx": %d, "invalid": %d, "sent": %d, "lines": %d, "wrapped": %d, "non2xx_statuses": [%s], '
      .. '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    non2xx_total, invalid_total, sent_total, lines, wrapped, "{" .. table.concat(merged, "}, {") .. "}",
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean
  ))
end
