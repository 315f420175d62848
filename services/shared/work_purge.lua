-- work_purge.lua: forget final items older than the retention (their outcome was answered and is
-- kept by the idempotency records and the provider's history; the queue is not an archive).
-- KEYS[1] the bucket's items hash, KEYS[2] the bucket's due zset, KEYS[3] the finished zset.
-- ARGV[1] cutoff (epoch ms): items final before it go, ARGV[2] at most this many.
-- Returns: the number of items dropped.
-- Invariant: only final items (never due, in the finished zset) are dropped.
local ids = redis.call("ZRANGEBYSCORE", KEYS[3], "-inf", tonumber(ARGV[1]), "LIMIT", 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  if not redis.call("ZSCORE", KEYS[2], id) then
    redis.call("HDEL", KEYS[1], id)
  end
  redis.call("ZREM", KEYS[3], id)
end
return #ids
