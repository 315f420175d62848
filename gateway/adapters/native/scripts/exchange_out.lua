-- exchange_out.lua: exchange step A, on the OLD card: move its whole balance into an escrow record
-- and deactivate it. The escrow id is derived from the caller's client_txn_id, so a re-called
-- exchange finds the same escrow and resumes instead of starting over.
-- KEYS: the seven OLD-card keys (see lib.lua; KEYS[7] = escrows).
-- ARGV: header (lib.lua; client_txn_id = the exchange's), ARGV[10] escrow id, ARGV[11] new card id.
-- Returns: JSON result; amount_minor = amount in escrow; balance_minor = 0;
--   extra {escrow_id, escrow_state pending|completed|cancelled[, failure_reason, failure_message]}
--   (a replay reports the escrow's CURRENT state, which is what tells exchange() how to resume).
-- Errors: CARD_NOT_FOUND, CARD_INACTIVE, CARD_HAS_OPEN_HOLDS, IDEMPOTENCY_KEY_REUSED.
-- Invariant: the old card's balance leaves it only into the escrow (history "exchange_out").

local escrow_id = ARGV[10]
local c = load_card()
local replayed = replay()
if replayed then
  local escrow = cjson.decode(redis.call("HGET", KEYS[7], escrow_id))
  replayed.extra.escrow_state = escrow.state
  replayed.extra.failure_reason = escrow.failure_reason
  replayed.extra.failure_message = escrow.failure_message
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
redis.call("HSET", KEYS[7], escrow_id, cjson.encode({
  escrow_id = escrow_id, transaction_id = NEW_TXN, amount_minor = amount, currency = c.currency,
  new_card_id = ARGV[11], state = "pending", created_ms = NOW,
}))
c.balance = 0
c.status = "deactivated"
return commit(c, {
  kind = "exchange_out", delta = -amount, amount = amount,
  extra = {escrow_id = escrow_id, escrow_state = "pending"},
  history = {escrow_id = escrow_id},
})
