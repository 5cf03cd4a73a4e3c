-- GET /v2/keys/bench/range/<i> (a plain v2 read, served by the member asked, as etcd
-- does without ?quorum=true) on keys bench/client_api.py loaded before the run.
package.path = (os.getenv("FASTKV_WRK_DIR") or "bench/wrk") .. "/?.lua;" .. package.path
require("common")

local nkeys = tonumber(os.getenv("FASTKV_RANGE_KEYS") or "1000")
local counter = 0
expect = '"value":"' .. string.rep("r", 64) .. '"'

function init(args)
   wrk.method = "GET"
   counter = tid * 7919  -- threads start at different keys
end

function request()
   counter = counter + 1
   return wrk.format(nil, "/v2/keys/bench/range/" .. (counter % nkeys))
end
