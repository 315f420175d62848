-- txn_create.lua: write a transaction record before its provider call (state "pending"), once.
-- KEYS[1] the transaction hash (mesh:txn:{txn:<merchant>:<transaction_id>}).
-- ARGV: field, value, ... (the whole record).
-- Returns: the state of the record: the new "pending", or the state of the one already there.
-- Invariant: a transaction record is written once; its state changes only via txn_transition.
local state = redis.call("HGET", KEYS[1], "state")
if state then
  return state
end
redis.call("HSET", KEYS[1], unpack(ARGV))
return redis.call("HGET", KEYS[1], "state")
