-- activate.lua: inactive -> active plus the initial load; an unknown card is created active (a sell).
-- KEYS: the seven card keys (see lib.lua).
-- ARGV: header (lib.lua; ARGV[5] = PIN HMAC: verified if the card has a PIN, stored if it has
--   none), ARGV[10] load amount, ARGV[11] currency, ARGV[12] masked number (for a new card).
-- Returns: JSON result {transaction_id, amount_minor, balance_minor, held_minor, currency, extra}.
-- Errors: CARD_ALREADY_ACTIVE, CARD_INACTIVE (deactivated), CURRENCY_MISMATCH, CARD_LOCKED,
--   INVALID_PIN, BALANCE_LIMIT_EXCEEDED, TRANSACTION_REVERSED, IDEMPOTENCY_KEY_REUSED.
-- Invariant: a card is loaded by activation at most once; an already active card gets no load.

local amount = tonumber(ARGV[10])
local currency = ARGV[11]
local c = load_card()
if c then
  check_pin(c)
end
local replayed = replay()
if replayed then
  return cjson.encode(replayed)
end

local created = false
if not c then
  c = new_card(ARGV[12], currency, "active", 0)
  created = true
else
  if c.status == "active" then
    fail("CARD_ALREADY_ACTIVE", "card is already active")
  end
  if c.status ~= "inactive" then
    fail("CARD_INACTIVE", "card is not active", {status = c.status})
  end
  require_currency(c, currency)
  if (c.pin == nil or c.pin == "") and PIN ~= "" then
    redis.call("HSET", KEYS[1], "pin", PIN)
  end
  c.status = "active"
end
require_room(c, amount)
c.balance = c.balance + amount
return commit(c, {kind = "activate", delta = amount, amount = amount, extra = {created = created}})
