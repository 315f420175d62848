-- hold.lua: authorize (reserve) an amount against the card's available balance until expiry.
-- KEYS: the seven card keys (see lib.lua).
-- ARGV: header (lib.lua), ARGV[10] requested amount, ARGV[11] currency, ARGV[12] "1" to allow a
--   partial approval, ARGV[13] expires_at_ms, ARGV[14] id for the new hold.
-- Returns: JSON result with hold_id; amount_minor = approved amount;
--   extra {requested_minor, partial}.
-- Errors: CARD_NOT_FOUND, CARD_INACTIVE, CURRENCY_MISMATCH, CARD_LOCKED, INVALID_PIN,
--   INSUFFICIENT_FUNDS, INVALID_ARGUMENT (expiry not in the future), TRANSACTION_REVERSED,
--   IDEMPOTENCY_KEY_REUSED.
-- Invariant: available (balance - held) never goes negative; held <= balance.

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
require_currency(c, ARGV[11])
local expires_at = tonumber(ARGV[13])
if expires_at <= NOW then
  fail("INVALID_ARGUMENT", "hold expiry must be in the future", {field = "expires_at_ms"})
end
purge_expired_holds(c)

local requested = tonumber(ARGV[10])
local available = c.balance - c.held
local approved = requested
if requested > available then
  if ARGV[12] ~= "1" or available <= 0 then
    fail("INSUFFICIENT_FUNDS", "available balance is short", {available_minor = int(available)})
  end
  approved = available
end

local h = {
  hold_id = ARGV[14], transaction_id = NEW_TXN, amount_minor = approved, captured_minor = 0,
  released_minor = 0, state = "open", expires_at_ms = expires_at, currency = c.currency,
  created_ms = NOW,
}
save_hold(h)
redis.call("ZADD", KEYS[4], ARGV[13], h.hold_id)
c.held = c.held + approved
return commit(c, {
  kind = "hold", delta = 0, amount = approved, hold_id = h.hold_id,
  extra = {requested_minor = requested, partial = approved < requested},
  history = {expires_at_ms = expires_at},
})
