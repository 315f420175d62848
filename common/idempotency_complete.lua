-- Store the final outcome of a claimed idempotency record and mark it done, if still owned.
--
-- KEYS[1]  the record hash  idem:{m:<merchant>:<request_id>}:<rpc>
-- ARGV[1]  fencing token the caller got from begin
-- ARGV[2]  outcome kind: 'response' (serialized, possibly sealed, response bytes) or 'error'
--          (JSON of a final MeshError)
-- ARGV[3]  outcome payload
-- ARGV[4]  record TTL in milliseconds (retention restarts at completion)
--
-- Returns 'OK' when stored, 'FENCED' when the record is gone, done, or owned by another token.
--
-- Invariant: only the current lease holder writes an outcome, and a done record is never
-- rewritten, so every replay of a request_id returns the same answer.
local key = KEYS[1]
local token, kind, payload, ttl_ms = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])

local rec = redis.call('HMGET', key, 'state', 'token')
if rec[1] ~= 'in_progress' or rec[2] ~= token then
  return 'FENCED'
end

redis.call('HSET', key, 'state', 'done', 'kind', kind, 'outcome', payload)
redis.call('HDEL', key, 'lease_until')
redis.call('PEXPIRE', key, ttl_ms)
return 'OK'
