-- intent_begin.lua: write down an operation that may move money BEFORE the provider is called.
-- KEYS[1] the intent hash (mesh:intent:{intent:<merchant>:<bucket>}:<reference_id>),
--   KEYS[2] the bucket's pending index (zset, score = created_ms).
-- ARGV[1] now (epoch ms), ARGV[2..] field, value, ... (reference_id, operation, card, params...).
-- Returns: {state, params}: state "pending" when new, else the state already recorded (a retry);
--   params the intent's params JSON as first written (a retry keeps the first attempt's, e.g. a
--   hold's expiry), so the caller needs no second read.
-- Invariant: every intent that is not final (done | failed | reversed) is in the pending index,
--   so the resolver finds every operation whose outcome was never written down.
local stored = redis.call("HMGET", KEYS[1], "state", "params")
if stored[1] then
  return {stored[1], stored[2] or "{}"}
end
redis.call("HSET", KEYS[1], "state", "pending", "created_ms", ARGV[1], unpack(ARGV, 2))
redis.call("ZADD", KEYS[2], ARGV[1], KEYS[1])
local params = "{}"
for i = 2, #ARGV - 1, 2 do
  if ARGV[i] == "params" then
    params = ARGV[i + 1]
  end
end
return {"pending", params}
