-- reverse.lua: undo one transaction (redeem, capture, credit, activation load, hold, cash-out)
-- exactly once,
-- or, when the original never arrived, leave a tombstone so that it is refused if it arrives later.
-- KEYS: the seven card keys (see lib.lua).
-- ARGV: header (lib.lua; client_txn_id = "": a reversal has no key of its own, it is idempotent
--   through the original), ARGV[10] transaction id or "", ARGV[11] the original's client_txn_id
--   (used when ARGV[10] is "").
-- Returns: JSON result; amount_minor = amount reversed (0 for a tombstone);
--   extra {reversed = true, reversed_transaction_id, reversed_kind}, or for a tombstone
--   {reversed = false, nothing_to_reverse = true, reversed_client_txn_id}.
--   Reversing again returns the first reversal's result (extra.replayed) and changes nothing.
-- Errors: TRANSACTION_NOT_FOUND, TRANSACTION_NOT_REVERSIBLE, CARD_INACTIVE (credit back to a
--   deactivated card), INSUFFICIENT_FUNDS (a credited amount already spent or held).
-- Invariant: a transaction is reversed at most once; balance >= 0 and held <= balance still hold.

local REVERSIBLE = {
  activate = true, redeem = true, reload = true, refund = true, capture = true, hold = true, cash_out = true,
}

local c = load_card()
local target = ARGV[10]
if target == "" then
  local original_client_txn = ARGV[11]
  local raw = redis.call("HGET", KEYS[6], original_client_txn)
  if raw then
    local index = cjson.decode(raw)
    if index.tombstone then
      return cjson.encode(replay_result(index.txn))
    end
    target = index.txn
  else
    -- The original never reached the ledger: remember that it is void so it can never apply.
    local result = {
      transaction_id = NEW_TXN, amount_minor = 0, balance_minor = 0, held_minor = 0,
      currency = "", hold_id = "",
      extra = {reversed = false, nothing_to_reverse = true, reversed_client_txn_id = original_client_txn},
    }
    if c then
      purge_expired_holds(c)
      result.balance_minor, result.held_minor, result.currency = c.balance, c.held, c.currency
      append_history(c, NEW_TXN, "reversal", 0, "", result.extra)
    end
    redis.call("HSET", KEYS[5], NEW_TXN, cjson.encode({
      kind = "reversal", delta = 0, amount_minor = 0, tombstone = true,
      reversed_client_txn_id = original_client_txn, ts_ms = NOW, result = result,
    }))
    redis.call("HSET", KEYS[6], original_client_txn, cjson.encode({tombstone = true, txn = NEW_TXN}))
    return cjson.encode(result)
  end
end

local raw = redis.call("HGET", KEYS[5], target)
if not raw then
  fail("TRANSACTION_NOT_FOUND", "transaction not found")
end
local rec = cjson.decode(raw)
if rec.reversed_by then
  return cjson.encode(replay_result(rec.reversed_by))
end
if not REVERSIBLE[rec.kind] then
  fail("TRANSACTION_NOT_REVERSIBLE", "this kind of transaction cannot be reversed", {kind = rec.kind})
end
require_card(c)
purge_expired_holds(c)

local amount = rec.amount_minor
local delta = 0
if rec.kind == "redeem" or rec.kind == "capture" then
  if c.status == "deactivated" then
    fail("CARD_INACTIVE", "card is not active", {status = c.status})
  end
  delta = amount
  if rec.kind == "capture" then
    -- The captured money goes back to the card, not back under the hold.
    local h = load_hold(rec.hold_id)
    h.captured_minor = h.captured_minor - amount
    h.released_minor = h.released_minor + amount
    save_hold(h)
  end
elseif rec.kind == "hold" then
  local h = load_hold(rec.hold_id)
  amount = open_amount(h)
  if h.state == "open" then
    h.released_minor = h.released_minor + amount
    h.state = "closed"
    save_hold(h)
  end
  c.held = c.held - amount
elseif rec.kind == "cash_out" then
  -- Compensation when what followed a cash-out failed (e.g. the new card of a refund could not be
  -- issued): the value goes back and the card is usable again. Only while nothing else happened.
  if c.status ~= "deactivated" or c.balance ~= 0 then
    fail("TRANSACTION_NOT_REVERSIBLE", "the card changed since it was cashed out", {status = c.status})
  end
  delta = amount
  c.status = "active"
else
  -- activate / reload / refund: take the credited value back off the card.
  local available = c.balance - c.held
  if amount > available then
    fail("INSUFFICIENT_FUNDS", "the credited value has already been spent or held",
      {available_minor = int(available)})
  end
  delta = -amount
  if rec.kind == "activate" and c.status == "active" and c.balance == amount and c.held == 0 then
    c.status = "inactive"
  end
end

c.balance = c.balance + delta
rec.reversed_by = NEW_TXN
redis.call("HSET", KEYS[5], target, cjson.encode(rec))
local hold_id = nil
if rec.hold_id ~= "" then
  hold_id = rec.hold_id
end
return commit(c, {
  kind = "reversal", delta = delta, amount = amount, hold_id = hold_id,
  extra = {reversed = true, reversed_transaction_id = target, reversed_kind = rec.kind},
  history = {reversed_transaction_id = target},
  record = {reversed_transaction_id = target},
})
