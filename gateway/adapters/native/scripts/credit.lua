-- credit.lua: add value to an active card (reload / fund, or refund to the original card).
-- KEYS: the seven card keys (see lib.lua).
-- ARGV: header (lib.lua), ARGV[10] amount, ARGV[11] currency, ARGV[12] "reload" | "refund".
-- Returns: JSON result; amount_minor = credited.
-- Errors: CARD_NOT_FOUND, CARD_INACTIVE, CURRENCY_MISMATCH, BALANCE_LIMIT_EXCEEDED,
--   TRANSACTION_REVERSED, IDEMPOTENCY_KEY_REUSED.
-- Invariant: balance only grows, up to the configured maximum balance.

local c = load_card()
local replayed = replay()
if replayed then
  return cjson.encode(replayed)
end
require_card(c)
require_active(c)
require_currency(c, ARGV[11])
local amount = tonumber(ARGV[10])
require_room(c, amount)
purge_expired_holds(c)
c.balance = c.balance + amount
return commit(c, {kind = ARGV[12], delta = amount, amount = amount})
