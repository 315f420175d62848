-- capture.lua: settle part or all of an open hold (debits the balance), optionally closing it.
-- KEYS: the seven card keys (see lib.lua).
-- ARGV: header (lib.lua), ARGV[10] hold id, ARGV[11] capture amount (0 allowed with release),
--   ARGV[12] "1" to release whatever stays open after this capture (closes the hold).
-- Returns: JSON result; amount_minor = captured; extra {released_minor, open_minor, hold_state}.
-- Errors: CARD_NOT_FOUND, HOLD_NOT_FOUND, HOLD_EXPIRED, HOLD_NOT_OPEN, AMOUNT_EXCEEDS_OPEN,
--   TRANSACTION_REVERSED, IDEMPOTENCY_KEY_REUSED.
-- Invariant: captured + released <= hold amount; balance and held drop together, so held <= balance.

local c = load_card()
local replayed = replay()
if replayed then
  return cjson.encode(replayed)
end
require_card(c)
purge_expired_holds(c)
local h = open_hold_for(c, ARGV[10])
local amount = tonumber(ARGV[11])
local open = open_amount(h)
if amount > open then
  fail("AMOUNT_EXCEEDS_OPEN", "capture exceeds the hold's open amount", {open_minor = int(open)})
end

local released = 0
if ARGV[12] == "1" then
  released = open - amount
end
h.captured_minor = h.captured_minor + amount
h.released_minor = h.released_minor + released
if open - amount - released == 0 then
  h.state = "closed"
end
save_hold(h)
c.balance = c.balance - amount
c.held = c.held - amount - released
return commit(c, {
  kind = "capture", delta = -amount, amount = amount, hold_id = h.hold_id,
  extra = {released_minor = released, open_minor = open_amount(h), hold_state = h.state},
  history = {released_minor = released},
})
