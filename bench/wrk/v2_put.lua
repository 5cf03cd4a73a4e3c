-- PUT /v2/keys/bench/put/<thread>/<counter>: a new key per request, with a 64-byte
-- value as a form body (what etcdctl v2 and python-etcd send). A new key is 201 Created.
package.path = (os.getenv("FASTKV_WRK_DIR") or "bench/wrk") .. "/?.lua;" .. package.path
require("common")

local body = "value=" .. string.rep("v", 64)
local counter = 0
ok_status = 201
expect = '"action":"set"'

function init(args)
   wrk.method = "PUT"
   wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end

function request()
   counter = counter + 1
   return wrk.format(nil, string.format("/v2/keys/bench/put/%d/%d", tid, counter), nil, body)
end
