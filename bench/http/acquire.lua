-- wrk script for scripts/bench-http: POST /v1/acquire with a JSON body. admitd answers 415
-- to a POST that is not application/json. The body asks for one unit of `rpm`, a limit the
-- bench config sets so high (10^12 per minute) that nothing is ever denied, without a lease
-- ("lease": false: the consume path; a lease would be an acquire plus a later commit).
-- No response() callback: defining one makes wrk parse every response's headers and body
-- in Lua; wrk's own "Non-2xx or 3xx responses" count is enough to catch denials.
wrk.method = "POST"
wrk.body = '{"entity":"user-1","resource":"gpt-4o","amounts":{"rpm":1},"lease":false}'
wrk.headers["Content-Type"] = "application/json"
