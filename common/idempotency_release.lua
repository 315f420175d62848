-- Drop a claimed idempotency record after a transient failure, so a retry runs the request again.
--
-- KEYS[1]  the record hash  idem:{m:<merchant>:<request_id>}:<rpc>
-- ARGV[1]  fencing token the caller got from begin
--
-- Returns 'OK' when deleted, 'FENCED' when the record is gone, done, or owned by another token.
--
-- Invariant: a done record (a stored final outcome) is never deleted, and a claimer whose lease
-- was taken over cannot delete the new claimer's record.
local key, token = KEYS[1], ARGV[1]

local rec = redis.call('HMGET', key, 'state', 'token')
if rec[1] ~= 'in_progress' or rec[2] ~= token then
  return 'FENCED'
end

redis.call('DEL', key)
return 'OK'
