-- hold_read.lua: one hold of the card, with its lazily computed state.
-- KEYS: the seven card keys (see lib.lua).
-- ARGV: header (lib.lua), ARGV[10] hold id.
-- Returns: JSON hold {hold_id, transaction_id, amount_minor, captured_minor, released_minor,
--   open_minor, state open|closed|expired, expires_at_ms, currency}.
-- Errors: CARD_NOT_FOUND, HOLD_NOT_FOUND.
-- Invariant: an expired hold is marked expired (and stops counting as held) before it is read.

local c = require_card(load_card())
purge_expired_holds(c)
local h = load_hold(ARGV[10])
h.open_minor = open_amount(h)
return cjson.encode(h)
