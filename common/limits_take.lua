-- Take tokens from one token bucket (rate limits, card velocity, unknown-card lookups), atomically.
--
-- KEYS[1]  the bucket hash  limit:{<scope>:<subject>}  fields: tokens, at_us
-- ARGV[1]  capacity: most tokens the bucket holds (the burst)
-- ARGV[2]  refill rate in tokens per second
-- ARGV[3]  cost: tokens to take; 0 = only ask whether one token is there (a peek, takes nothing);
--          negative = give tokens back (a reservation that turned out not to count), never above
--          capacity, always allowed
--
-- Returns {allowed (1/0), retry_after_ms, tokens left (floor)}.
--
-- Invariant: over any interval of t seconds at most capacity + rate * t tokens are granted per
-- bucket, whatever the number of callers or processes. Time is Redis' own clock (TIME), so servers
-- with skewed clocks share one budget. An idle bucket expires once it would be full again, so
-- buckets of subjects that stopped calling cost no memory.
local key = KEYS[1]
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])

local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])

local state = redis.call('HMGET', key, 'tokens', 'at_us')
local tokens = tonumber(state[1])
local at_us = tonumber(state[2])
if tokens == nil or at_us == nil then
  tokens = capacity
  at_us = now_us
end
if now_us > at_us then
  tokens = math.min(capacity, tokens + (now_us - at_us) * rate / 1000000)
end

if cost < 0 then
  tokens = math.min(capacity, tokens - cost)
  redis.call('HSET', key, 'tokens', tostring(tokens), 'at_us', tostring(now_us))
  redis.call('PEXPIRE', key, math.ceil((capacity - tokens) * 1000 / rate) + 1000)
  return {1, 0, math.floor(tokens)}
end

local need = cost
if need == 0 then need = 1 end
if tokens < need then
  local retry_ms = math.ceil((need - tokens) * 1000 / rate)
  return {0, retry_ms, math.floor(tokens)}
end
if cost == 0 then
  return {1, 0, math.floor(tokens)}
end

tokens = tokens - cost
redis.call('HSET', key, 'tokens', tostring(tokens), 'at_us', tostring(now_us))
redis.call('PEXPIRE', key, math.ceil((capacity - tokens) * 1000 / rate) + 1000)
return {1, 0, math.floor(tokens)}
