-- exchange_complete.lua: exchange step C, on the OLD card: mark the escrow completed once the new
-- card has been credited. Idempotent; a completed or cancelled escrow is returned unchanged.
-- KEYS: the seven OLD-card keys (see lib.lua; KEYS[7] = escrows).
-- ARGV: header (lib.lua), ARGV[10] escrow id, ARGV[11] the new card's exchange_in transaction id.
-- Returns: JSON escrow record. Errors: TRANSACTION_NOT_FOUND (no such escrow).
-- Invariant: an escrow ends exactly one way: completed (credited to the new card) or cancelled.

local raw = redis.call("HGET", KEYS[7], ARGV[10])
if not raw then
  fail("TRANSACTION_NOT_FOUND", "escrow not found")
end
local escrow = cjson.decode(raw)
if escrow.state == "pending" then
  escrow.state = "completed"
  escrow.in_transaction_id = ARGV[11]
  escrow.completed_ms = NOW
  redis.call("HSET", KEYS[7], ARGV[10], cjson.encode(escrow))
end
return cjson.encode(escrow)
