-- wrk script for benchmarks/paid_api.py: one thread and one keep-alive connection per lane
-- (run with -t C -c C), each walking its lane's tokens in order, as a real client does.
-- Arguments after "--": "unpaid", or the directory holding lane-<n>.txt (one token per line).
local next_lane = 0
local threads = {}

function setup(thread)
   thread:set("lane", next_lane)
   next_lane = next_lane + 1
   table.insert(threads, thread)
end

function init(args)
   mode = args[1] or "unpaid"
   tokens = {}
   if mode ~= "unpaid" then
      for line in io.lines(mode .. "/lane-" .. lane .. ".txt") do
         tokens[#tokens + 1] = line
      end
   end
   i = 0
   failed = 0
   statuses = ""  -- the refused calls, " 402/exhausted 400/bad_token ..." (a string: wrk passes no tables)
end

function request()
   i = i + 1
   if mode == "unpaid" then
      return wrk.format("GET", "/unpaid/weather/c" .. i)
   end
   -- Past the last token the server refuses the call: counted as failed, never served.
   return wrk.format("GET", "/weather/c" .. i, {["Lightspeed-Token"] = tokens[i] or "none"})
end

function response(status, headers, body)
   if status ~= 200 then
      failed = failed + 1
      if failed <= 1000 then  -- the status and the refusal's code ("402/exhausted")
         statuses = statuses .. " " .. status .. "/" .. (string.match(body or "", '"code":%s*"([%w_]+)"') or "-")
      end
   end
end

function done(summary, latency, requests)
   local total = 0
   local by_status = {}
   for _, thread in ipairs(threads) do
      total = total + thread:get("failed")
      for code in string.gmatch(thread:get("statuses"), "%S+") do
         by_status[code] = (by_status[code] or 0) + 1
      end
   end
   local codes = {}
   for code, count in pairs(by_status) do
      codes[#codes + 1] = code .. ":" .. count
   end
   table.sort(codes)
   io.write(string.format("LIGHTSPEED requests=%d failed=%d seconds=%.3f statuses=%s\n",
                          summary.requests, total, summary.duration / 1e6, table.concat(codes, ",")))
end
