-- Shared by the workload scripts: base64, per-thread ids, and the error count.
--
-- Each wrk thread runs its own Lua state. setup() (main state) numbers the
-- threads and keeps them so done() can add up their counters; response() counts
-- every answer whose status is not `ok_status` (200 unless the script says), and every
-- right-status answer whose body lacks the
-- text the script expects (`expect`, e.g. the key it read) -- a benchmark of
-- errors or of wrong answers is worthless, and bench/client_api.py fails the run
-- when either count is not zero.

local b64chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

function base64(data)
   return ((data:gsub(".", function(x)
      local r, b = "", x:byte()
      for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and "1" or "0") end
      return r
   end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
      if #x < 6 then return "" end
      local c = 0
      for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
      return b64chars:sub(c + 1, c + 1)
   end) .. ({ "", "==", "=" })[#data % 3 + 1])
end

local threads = {}
local next_id = 0

function setup(thread)
   thread:set("tid", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

non200 = 0
badbody = 0
first_error = ""
expect = nil  -- set by the workload script: plain text every good answer contains
ok_status = 200

function response(status, headers, body)
   if status ~= ok_status then
      non200 = non200 + 1
      if first_error == "" then first_error = status .. " " .. body:sub(1, 200) end
   elseif expect ~= nil and not body:find(expect, 1, true) then
      badbody = badbody + 1
      if first_error == "" then first_error = status .. " without " .. expect .. ": " .. body:sub(1, 200) end
   end
end

function done(summary, latency, requests)
   local total, bad, first = 0, 0, ""
   for _, t in ipairs(threads) do
      total = total + t:get("non200")
      bad = bad + t:get("badbody")
      local e = t:get("first_error")
      if first == "" and e ~= nil then first = e end
   end
   io.write(string.format("fastkv-bench non200=%d badbody=%d requests=%d\n", total, bad, summary.requests))
   if first ~= "" then io.write("fastkv-bench first_error=" .. first:gsub("\n", " ") .. "\n") end
end
