-- wrk script driven by bench/harness.py (one wrk run = one side of one cell), for bench_crud.py,
-- bench_search.py, bench_consent.py and bench_audit.py.
--
-- Environment:
--   BENCH_MODE    "read": GET BENCH_PATH .. <random id from BENCH_IDS>
--                 "create": POST BENCH_PATH with the next body of BENCH_BODIES (one JSON per line)
--                 "paths": GET a random line of BENCH_PATHS (a path with its query string)
--   BENCH_PATH    path prefix, e.g. /fhir/Patient/ (read) or /fhir/Patient (create)
--   BENCH_IDS     file of ids, one a line
--   BENCH_BODIES  file of request bodies, one a line
--   BENCH_PATHS   file of request paths, one a line
--   BENCH_OUT     where done() writes the results as one JSON object
--   BENCH_TOKEN   optional: an access token, sent as "Authorization: Bearer <token>" with every request
--
-- The results carry wrk's latency histogram (microsecond -> count) so that harness.py can merge
-- several runs exactly; wrk has already applied its coordinated-omission correction to it, which
-- harness.py undoes (it knows the interval wrk used).

local mode = os.getenv("BENCH_MODE")
local path = os.getenv("BENCH_PATH")
local sources = {read = "BENCH_IDS", create = "BENCH_BODIES", paths = "BENCH_PATHS"}
local source = assert(os.getenv(sources[mode] or ""), "BENCH_MODE must be read, create or paths")
local items = {}
for line in io.lines(source) do
  if #line > 0 then items[#items + 1] = line end
end
local n = #items
local token = os.getenv("BENCH_TOKEN")
local cursor = 0
local threads = {}

statuses = {}      -- per-thread status code -> count, read back by done() with thread:get
sent = 0           -- per-thread requests started (those without an answer were in flight when wrk stopped)
thread_index = 0   -- set by setup() before init()

function setup(thread)
  threads[#threads + 1] = thread
  thread:set("thread_index", #threads)
end

function init(args)
  math.randomseed(os.time() * 1000 + thread_index)
  cursor = (thread_index * 7919) % n
  wrk.headers["Accept"] = "application/fhir+json"
  if token and #token > 0 then
    wrk.headers["Authorization"] = "Bearer " .. token
  end
  if mode == "create" then
    wrk.headers["Content-Type"] = "application/fhir+json"
  end
end

function request()
  sent = sent + 1
  if mode == "read" then
    return wrk.format("GET", path .. items[math.random(n)])
  end
  if mode == "paths" then
    return wrk.format("GET", items[math.random(n)])
  end
  cursor = cursor % n + 1
  return wrk.format("POST", path, nil, items[cursor])
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local out = assert(io.open(os.getenv("BENCH_OUT"), "w"))
  local counts = {}
  local started = 0
  for _, thread in ipairs(threads) do
    started = started + thread:get("sent")
    for code, count in pairs(thread:get("statuses")) do
      counts[code] = (counts[code] or 0) + count
    end
  end
  local parts = {}
  for code, count in pairs(counts) do
    parts[#parts + 1] = string.format('"%d": %d', code, count)
  end
  local e = summary.errors
  out:write(string.format(
    '{"duration_us": %d, "requests": %d, "bytes": %d, "threads": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, "statuses": {%s}, ' ..
    '"sent": %d, ',
    summary.duration, summary.requests, summary.bytes, #threads,
    e.connect, e.read, e.write, e.status, e.timeout, table.concat(parts, ", "), started))
  -- latency(i) is the i-th distinct recorded value and its count
  local hist = {}
  for i = 1, #latency do
    local value, count = latency(i)
    hist[#hist + 1] = string.format("[%d, %d]", value, count)
  end
  out:write('"latency_us": [' .. table.concat(hist, ", ") .. "]}\n")
  out:close()
end
