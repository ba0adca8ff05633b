-- wrk script: sends pre-built raw HTTP requests, one distinct request per call,
-- and counts hookrelay's answers.
--
--   wrk -t2 -c64 -d10s -s bench/requests.lua http://127.0.0.1:18080 -- FILE.wrk 2
--
-- FILE.wrk is what `loadgen wrk-file` writes: "<length>\n<raw request>" repeated.
-- The second argument is wrk's thread count: thread i sends requests i, i+n,
-- i+2n, ... so no two threads send the same one. A thread that has sent all
-- its requests starts over (counted in `wraps`: for the unique cases that
-- means repeats, so the bench sizes FILE to avoid it).
--
-- done() prints one line "RESULT key=value ..." for bench/run.sh.

local threads = {}

function setup(thread)
   thread:set("id", #threads)
   table.insert(threads, thread)
end

-- Per-thread state (globals, so done() can read them with thread:get).
reqs = {}
count = 0
idx = 0
wraps = 0
ok_new = 0
ok_dup = 0
non2xx = 0

function init(args)
   local path, nthreads = args[1], tonumber(args[2] or "1")
   local f = assert(io.open(path, "rb"))
   local data = f:read("*a")
   f:close()
   local pos, k, size = 1, 0, #data
   while pos <= size do
      local nl = data:find("\n", pos, true)
      if not nl then break end
      local len = tonumber(data:sub(pos, nl - 1))
      local first = nl + 1
      if k % nthreads == id then
         count = count + 1
         reqs[count] = data:sub(first, first + len - 1)
      end
      k = k + 1
      pos = first + len
   end
   data = nil
   collectgarbage()
   assert(count > 0, "no requests for thread " .. id .. " in " .. path)
end

function request()
   idx = idx + 1
   if idx > count then
      idx = 1
      wraps = wraps + 1
   end
   return reqs[idx]
end

function response(status, headers, body)
   if status >= 200 and status < 300 then
      if body:find('"duplicate":true', 1, true) then
         ok_dup = ok_dup + 1
      else
         ok_new = ok_new + 1
      end
   else
      non2xx = non2xx + 1
   end
end

function done(summary, latency, requests)
   local new, dup, non, wr = 0, 0, 0, 0
   for _, t in ipairs(threads) do
      new = new + t:get("ok_new")
      dup = dup + t:get("ok_dup")
      non = non + t:get("non2xx")
      wr = wr + t:get("wraps")
   end
   local e = summary.errors
   local secs = summary.duration / 1e6
   io.write(string.format(
      "RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d " ..
      "ok_new=%d ok_dup=%d non2xx=%d errors=%d timeouts=%d wraps=%d\n",
      summary.requests, summary.duration, summary.requests / secs,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
      latency.max, new, dup, non, e.connect + e.read + e.write, e.timeout, wr))
end
