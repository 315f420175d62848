-- emulation_held.lua: the amount held by open, unexpired shadow holds on one card (expired ones
-- are dropped on the way).
-- KEYS[1] expiries zset, KEYS[2] held hash; one tag {gwh:<merchant>:<card hmac>}.
-- ARGV[1] now_ms. Returns the held minor units (integer).
-- Invariant: an expired shadow hold never counts against the vendor balance.
local now = tonumber(ARGV[1])
local expired = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", "(" .. now)
for _, id in ipairs(expired) do
  redis.call("HDEL", KEYS[2], id)
end
if #expired > 0 then
  redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", "(" .. now)
end
local total = 0
for _, v in ipairs(redis.call("HVALS", KEYS[2])) do
  total = total + tonumber(v)
end
return total
