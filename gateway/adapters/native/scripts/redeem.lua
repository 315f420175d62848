-- redeem.lua: debit amount + tip from the AVAILABLE balance (balance minus open holds).
-- KEYS: the seven card keys (see lib.lua).
-- ARGV: header (lib.lua), ARGV[10] amount, ARGV[11] tip, ARGV[12] currency,
--   ARGV[13] "1" for PARTIAL mode (take what is there), "0" for STRICT (deny when short).
-- Returns: JSON result; amount_minor = debited total; extra {requested_minor, tip_minor, partial}
--   (a partial approval covers the amount first, then the tip).
-- Errors: CARD_NOT_FOUND, CARD_INACTIVE, CURRENCY_MISMATCH, CARD_LOCKED, INVALID_PIN,
--   INSUFFICIENT_FUNDS, TRANSACTION_REVERSED, IDEMPOTENCY_KEY_REUSED.
-- Invariant: available never goes negative, so money held for others is never spent.

local c = load_card()
if c then
  check_pin(c)
end
local replayed = replay()
if replayed then
  return cjson.encode(replayed)
end
require_card(c)
require_active(c)
require_currency(c, ARGV[12])
purge_expired_holds(c)

local amount = tonumber(ARGV[10])
local requested = amount + tonumber(ARGV[11])
local available = c.balance - c.held
local approved = requested
if requested > available then
  if ARGV[13] ~= "1" or available <= 0 then
    fail("INSUFFICIENT_FUNDS", "available balance is short", {available_minor = int(available)})
  end
  approved = available
end
local tip = approved - math.min(amount, approved)
c.balance = c.balance - approved
return commit(c, {
  kind = "redeem", delta = -approved, amount = approved,
  extra = {requested_minor = requested, tip_minor = tip, partial = approved < requested},
  history = {tip_minor = tip},
})
