-- Extend the lease of a claimed idempotency record while its claimer is still working.
--
-- KEYS[1]  the record hash  idem:{m:<merchant>:<request_id>}:<rpc>
-- ARGV[1]  fencing token the caller got from begin
-- ARGV[2]  lease in milliseconds, counted from now (Redis clock)
--
-- Returns 'OK' when extended, 'FENCED' when the record is gone, done, or owned by another token.
--
-- Invariant: only the current lease holder can extend its lease; an expired lease that was already
-- taken over is not revived.
local key, token, lease_ms = KEYS[1], ARGV[1], tonumber(ARGV[2])

local rec = redis.call('HMGET', key, 'state', 'token')
if rec[1] ~= 'in_progress' or rec[2] ~= token then
  return 'FENCED'
end

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', key, 'lease_until', now_ms + lease_ms)
return 'OK'
