-- exchange_in.lua: exchange step B, on the NEW card: credit the escrowed amount exactly once.
-- The escrow id is this script's client_txn_id on the new card, so a resumed exchange replays
-- the first credit instead of crediting again.
-- KEYS: the seven NEW-card keys (see lib.lua).
-- ARGV: header (lib.lua; client_txn_id = escrow id), ARGV[10] escrow amount, ARGV[11] currency,
--   ARGV[12] masked number (used when the new card is unknown and gets created).
-- Returns: JSON result; amount_minor = credited; extra {escrow_id, created}.
-- Errors: CARD_ALREADY_ACTIVE, CARD_INACTIVE (deactivated), CURRENCY_MISMATCH,
--   BALANCE_LIMIT_EXCEEDED, TRANSACTION_REVERSED (the exchange was aborted).
-- Invariant: one escrow credits one card once (history "exchange_in").

local c = load_card()
local replayed = replay()
if replayed then
  return cjson.encode(replayed)
end
local amount = tonumber(ARGV[10])
local created = false
if not c then
  c = new_card(ARGV[12], ARGV[11], "active", 0)
  created = true
else
  if c.status == "active" then
    fail("CARD_ALREADY_ACTIVE", "the exchange target card is already active")
  end
  if c.status ~= "inactive" then
    fail("CARD_INACTIVE", "card is not active", {status = c.status})
  end
  require_currency(c, ARGV[11])
  c.status = "active"
end
require_room(c, amount)
c.balance = c.balance + amount
return commit(c, {
  kind = "exchange_in", delta = amount, amount = amount,
  extra = {escrow_id = CLIENT_TXN, created = created},
  history = {escrow_id = CLIENT_TXN},
})
