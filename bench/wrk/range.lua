-- POST /v3/kv/range (linearizable: the default) on keys bench/client_api.py
-- loaded before the run: "bench/range/<i>" for i in [0, FASTKV_RANGE_KEYS).
package.path = (os.getenv("FASTKV_WRK_DIR") or "bench/wrk") .. "/?.lua;" .. package.path
require("common")

local nkeys = tonumber(os.getenv("FASTKV_RANGE_KEYS") or "1000")
local bodies = {}
local counter = 0
-- every key holds the same 64-byte value: a right answer carries it
expect = '"value":"' .. base64(string.rep("r", 64)) .. '"'

function init(args)
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
   for i = 0, nkeys - 1 do
      bodies[i] = '{"key":"' .. base64("bench/range/" .. i) .. '"}'
   end
   counter = tid * 7919  -- threads start at different keys
end

function request()
   counter = counter + 1
   return wrk.format(nil, "/v3/kv/range", nil, bodies[counter % nkeys])
end
