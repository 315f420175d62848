-- client_tombstone.lua: reversal by client_transaction_id. If no operation was ever bound to the
-- id, leave a tombstone so a late arrival of it is refused; otherwise report the binding.
-- KEYS[1] the client index hash.
-- ARGV[1] now (epoch ms).
-- Returns: "TOMBSTONED" (nothing arrived; now blocked; also on a repeat) or "BOUND" (an operation
--   is bound: the caller reverses it).
-- Invariant: once tombstoned, client_claim refuses the id forever.
local raw = redis.call("HMGET", KEYS[1], "tombstone", "target_id")
if raw[1] == "1" then
  return "TOMBSTONED"
end
if raw[2] then
  return "BOUND"
end
redis.call("HSET", KEYS[1], "tombstone", "1", "created_ms", ARGV[1])
return "TOMBSTONED"
