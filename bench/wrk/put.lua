-- POST /v3/kv/put with a distinct key per request: "bench/put/<thread>/<counter>",
-- and a 64-byte value (base64 in the JSON body, as the v3 gateway wants).
package.path = (os.getenv("FASTKV_WRK_DIR") or "bench/wrk") .. "/?.lua;" .. package.path
require("common")

local value64 = base64(string.rep("v", 64))
local counter = 0
expect = '"header":{'  -- a PutResponse; errors have no header

function init(args)
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
end

function request()
   counter = counter + 1
   local key = base64(string.format("bench/put/%d/%d", tid, counter))
   return wrk.format(nil, "/v3/kv/put", nil,
                     '{"key":"' .. key .. '","value":"' .. value64 .. '"}')
end
