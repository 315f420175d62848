-- txn_transition.lua: move a transaction from one of the expected states to a new one and set
-- the fields that come with it (amounts the provider reported, its transaction id, reversal data).
-- KEYS[1] the transaction hash; KEYS[2] (optional, same hash tag) the redemption's refunds hash:
--   when given, the move is refused while any refund of it is reserved or done (a void or reversal
--   would otherwise give back money that a refund already returned).
-- ARGV[1] expected states, comma separated (e.g. "pending" or "approved,reversing"),
--   ARGV[2] new state, ARGV[3..] field, value, ...
-- Returns: {"OK", new state}, {"CONFLICT", current state} or {"REFUNDED", refunded total}
--   (nothing changed).
-- Errors: TRANSACTION_NOT_FOUND.
-- Invariant: the state machine pending -> approved | declined; approved -> reversing -> reversed;
--   pending -> reversed (reversed before it was confirmed); no other move, each at most once.
local state = redis.call("HGET", KEYS[1], "state")
if not state then
  return redis.error_reply("TRANSACTION_NOT_FOUND {}")
end
local allowed = false
for expected in string.gmatch(ARGV[1], "[^,]+") do
  if expected == state then
    allowed = true
  end
end
if not allowed then
  return {"CONFLICT", state}
end
if KEYS[2] then
  local refunded = tonumber(redis.call("HGET", KEYS[2], "total") or "0")
  if refunded > 0 then
    return {"REFUNDED", string.format("%d", refunded)}
  end
end
redis.call("HSET", KEYS[1], "state", ARGV[2])
if #ARGV > 2 then
  redis.call("HSET", KEYS[1], unpack(ARGV, 3))
end
return {"OK", ARGV[2]}
