-- intent_begin.lua: write down an operation that may move money BEFORE the provider is called.
-- KEYS[1] the intent hash (mesh:intent:{intent:<merchant>:<bucket>}:<reference_id>),
--   KEYS[2] the bucket's pending index (zset, score = created_ms).
-- ARGV[1] now (epoch ms), ARGV[2..] field, value, ... (reference_id, operation, card, params...).
-- Returns: the intent's state: "pending" when new, else the state already recorded (a retry).
-- Invariant: every intent that is not final (done | failed | reversed) is in the pending index,
--   so the resolver finds every operation whose outcome was never written down.
local state = redis.call("HGET", KEYS[1], "state")
if state then
  return state
end
redis.call("HSET", KEYS[1], "state", "pending", "created_ms", ARGV[1], unpack(ARGV, 2))
redis.call("ZADD", KEYS[2], ARGV[1], KEYS[1])
return "pending"
