-- release.lua: give back part or all of a hold's open amount (authorization reversal).
-- KEYS: the seven card keys (see lib.lua).
-- ARGV: header (lib.lua), ARGV[10] hold id, ARGV[11] amount to release, or "" for all still open.
-- Returns: JSON result; amount_minor = released; extra {open_minor, hold_state}.
-- Errors: CARD_NOT_FOUND, HOLD_NOT_FOUND, HOLD_EXPIRED, HOLD_NOT_OPEN, AMOUNT_EXCEEDS_OPEN,
--   TRANSACTION_REVERSED, IDEMPOTENCY_KEY_REUSED.
-- Invariant: captured + released <= hold amount; the balance is untouched, held only drops.

local c = load_card()
local replayed = replay()
if replayed then
  return cjson.encode(replayed)
end
require_card(c)
purge_expired_holds(c)
local h = open_hold_for(c, ARGV[10])
local open = open_amount(h)
local amount = open
if ARGV[11] ~= "" then
  amount = tonumber(ARGV[11])
end
if amount > open then
  fail("AMOUNT_EXCEEDS_OPEN", "release exceeds the hold's open amount", {open_minor = int(open)})
end

h.released_minor = h.released_minor + amount
if open - amount == 0 then
  h.state = "closed"
end
save_hold(h)
c.held = c.held - amount
return commit(c, {
  kind = "release", delta = 0, amount = amount, hold_id = h.hold_id,
  extra = {open_minor = open_amount(h), hold_state = h.state},
})
