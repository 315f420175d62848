-- Claim or replay one idempotency record (AIP-155 request_id), atomically.
--
-- KEYS[1]  the record hash  idem:{m:<merchant>:<request_id>}:<rpc>
-- ARGV[1]  request fingerprint (hex)
-- ARGV[2]  fencing token for this attempt (random, unique per attempt)
-- ARGV[3]  lease in milliseconds (how long the claimer may run before it is presumed dead)
-- ARGV[4]  record TTL in milliseconds
--
-- Returns one of:
--   {'NEW', attempt}            record created (attempt 1) or a dead claimer's expired lease taken
--                               over (attempt n+1); the caller now owns the record with ARGV[2]
--   {'REPLAY', kind, outcome}   record done with the same fingerprint: the stored outcome
--   {'CONFLICT'}                the request_id was used with a different request (any state)
--   {'IN_PROGRESS', lease_left_ms}  same request, a live claimer is still running it
--
-- Invariant: at most one claimer holds a live lease on a record, and a record's fingerprint never
-- changes once written, so one request_id maps to one request and at most one stored outcome.
-- Time is Redis' own clock (TIME), so claimers on hosts with skewed clocks agree on lease expiry.
local key = KEYS[1]
local fingerprint, token = ARGV[1], ARGV[2]
local lease_ms, ttl_ms = tonumber(ARGV[3]), tonumber(ARGV[4])

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local rec = redis.call('HMGET', key, 'fp', 'state', 'lease_until', 'attempt')
if not rec[1] then
  redis.call('HSET', key, 'fp', fingerprint, 'state', 'in_progress', 'token', token,
             'lease_until', now_ms + lease_ms, 'attempt', 1)
  redis.call('PEXPIRE', key, ttl_ms)
  return {'NEW', 1}
end

if rec[1] ~= fingerprint then
  return {'CONFLICT'}
end

local state = rec[2]
if state == 'done' then
  local outcome = redis.call('HMGET', key, 'kind', 'outcome')
  return {'REPLAY', outcome[1], outcome[2]}
end

if state == 'in_progress' then
  local lease_until = tonumber(rec[3])
  if lease_until > now_ms then
    return {'IN_PROGRESS', lease_until - now_ms}
  end
  -- The claimer's lease ran out without complete/release: presume it dead and take over. Its
  -- token is replaced, so its late complete/release are refused (fencing).
  local attempt = tonumber(rec[4]) + 1
  redis.call('HSET', key, 'token', token, 'lease_until', now_ms + lease_ms, 'attempt', attempt)
  redis.call('PEXPIRE', key, ttl_ms)
  return {'NEW', attempt}
end

return redis.error_reply('idempotency record ' .. key .. ' has unknown state')
