-- cash_out.lua: devalue and deactivate a card (cash-out, or cancel of a gift card purchase).
-- KEYS: the seven card keys (see lib.lua).
-- ARGV: header only (lib.lua).
-- Returns: JSON result; amount_minor = the balance removed; balance_minor = 0.
-- Errors: CARD_NOT_FOUND, CARD_INACTIVE, CARD_HAS_OPEN_HOLDS, TRANSACTION_REVERSED,
--   IDEMPOTENCY_KEY_REUSED.
-- Invariant: money reserved by an open hold is never paid out; a deactivated card holds 0.

local c = load_card()
local replayed = replay()
if replayed then
  return cjson.encode(replayed)
end
require_card(c)
require_active(c)
purge_expired_holds(c)
if c.held > 0 then
  fail("CARD_HAS_OPEN_HOLDS", "release or capture the card's open holds first",
    {held_minor = int(c.held)})
end
local amount = c.balance
c.balance = 0
c.status = "deactivated"
return commit(c, {kind = "cash_out", delta = -amount, amount = amount})
