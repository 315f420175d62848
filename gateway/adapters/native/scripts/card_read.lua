-- card_read.lua: the card's state for a balance inquiry (verifies the PIN, expires stale holds).
-- KEYS: the seven card keys (see lib.lua).
-- ARGV: header only (lib.lua).
-- Returns: JSON card state. Errors: CARD_NOT_FOUND, CARD_LOCKED, INVALID_PIN.
-- Invariant: held reported = open, unexpired holds only (expired ones are purged first).

local c = require_card(load_card())
check_pin(c)
purge_expired_holds(c)
return cjson.encode(card_state(c))
