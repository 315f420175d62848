-- card_create.lua: provision a card (demo cards, allocation from a card set).
-- KEYS: the seven card keys (see lib.lua).
-- ARGV: header (lib.lua; ARGV[5] = PIN HMAC or ""), ARGV[10] masked number, ARGV[11] currency,
--   ARGV[12] opening balance (minor units), ARGV[13] "active" | "inactive".
-- Returns: JSON card state. Errors: CARD_ALREADY_EXISTS, BALANCE_LIMIT_EXCEEDED.
-- Invariant: the opening balance is written to history ("provision"), so history sums to balance.

if load_card() then
  fail("CARD_ALREADY_EXISTS", "card already exists")
end
local balance = tonumber(ARGV[12])
local c = new_card(ARGV[10], ARGV[11], ARGV[13], 0)
require_room(c, balance)
c.balance = balance
commit(c, {kind = "provision", delta = balance, amount = balance})
return cjson.encode(card_state(c))
