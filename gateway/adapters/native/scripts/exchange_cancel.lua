-- exchange_cancel.lua: compensation for an exchange whose new card refused the credit, on the
-- OLD card: return the escrowed amount and reactivate the card. ledger.py runs it only after it
-- has tombstoned the escrow on the new card, so the credit can no longer land there.
-- KEYS: the seven OLD-card keys (see lib.lua; KEYS[7] = escrows).
-- ARGV: header (lib.lua), ARGV[10] escrow id, ARGV[11] failure reason, ARGV[12] failure message.
-- Returns: JSON escrow record. Errors: TRANSACTION_NOT_FOUND (no such escrow), CARD_NOT_FOUND.
-- Invariant: an escrow ends exactly one way; cancelling twice credits the old card once.

local raw = redis.call("HGET", KEYS[7], ARGV[10])
if not raw then
  fail("TRANSACTION_NOT_FOUND", "escrow not found")
end
local escrow = cjson.decode(raw)
if escrow.state ~= "pending" then
  return raw
end
local c = require_card(load_card())
escrow.state = "cancelled"
escrow.failure_reason = ARGV[11]
escrow.failure_message = ARGV[12]
escrow.cancelled_ms = NOW
redis.call("HSET", KEYS[7], ARGV[10], cjson.encode(escrow))
c.balance = c.balance + escrow.amount_minor
c.status = "active"
commit(c, {
  kind = "exchange_cancel", delta = escrow.amount_minor, amount = escrow.amount_minor,
  extra = {escrow_id = ARGV[10]}, history = {escrow_id = ARGV[10]},
})
return cjson.encode(escrow)
