-- refund_reserve.lua: reserve a refund of one redemption before the card is credited.
-- KEYS[1] the redemption's record  mesh:txn:{txn:<merchant>:<transaction_id>} (read only; written
--         by the authorization service)
-- KEYS[2] its refunds              refund:{txn:<merchant>:<transaction_id>}  hash
--         total (reserved + done, minor units), refunded (done), r:<refund_id> JSON entry
-- ARGV[1] refund id (the caller's request_id)   ARGV[2] amount (minor)   ARGV[3] currency
-- ARGV[4] now_ms
-- Returns: {"NEW" | "EXISTS", entry state (pending | done | aborted)}.
-- Errors: TRANSACTION_NOT_FOUND, TRANSACTION_NOT_REFUNDABLE {state}, CURRENCY_MISMATCH,
--   IDEMPOTENCY_KEY_REUSED (same refund id, other amount), AMOUNT_EXCEEDS_REFUNDABLE
--   {refundable_minor}.
-- Invariant: total <= redeemed - reversed_amount: the refunds of a transaction, reserved or done,
--   never exceed what it debited and was not voided, however many run at once.

local state = redis.call("HGET", KEYS[1], "state")
if not state then
  return redis.error_reply("TRANSACTION_NOT_FOUND {}")
end
local entry_key = "r:" .. ARGV[1]
local amount = tonumber(ARGV[2])
local existing = redis.call("HGET", KEYS[2], entry_key)
if existing then
  local entry = cjson.decode(existing)
  if tonumber(entry.amount) ~= amount then
    return redis.error_reply("IDEMPOTENCY_KEY_REUSED {}")
  end
  return {"EXISTS", entry.state}
end
if state ~= "approved" then
  return redis.error_reply("TRANSACTION_NOT_REFUNDABLE " .. cjson.encode({state = state}))
end
if redis.call("HGET", KEYS[1], "currency") ~= ARGV[3] then
  return redis.error_reply("CURRENCY_MISMATCH {}")
end
local redeemed = tonumber(redis.call("HGET", KEYS[1], "redeemed") or "0")
local reversed = tonumber(redis.call("HGET", KEYS[1], "reversed_amount") or "0")
local total = tonumber(redis.call("HGET", KEYS[2], "total") or "0")
local refundable = redeemed - reversed - total
if amount > refundable then
  return redis.error_reply("AMOUNT_EXCEEDS_REFUNDABLE " ..
    cjson.encode({refundable_minor = string.format("%d", math.max(refundable, 0))}))
end
redis.call("HSET", KEYS[2], entry_key,
  cjson.encode({amount = ARGV[2], state = "pending", created_ms = ARGV[4]}))
redis.call("HINCRBY", KEYS[2], "total", amount)
return {"NEW", "pending"}
