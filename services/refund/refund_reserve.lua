-- refund_reserve.lua: reserve a refund of one original payment before the card is credited.
-- The payment is a redemption (authorization service) or a settled capture (settlement service);
-- its record is read here, never written.
-- KEYS[1] the payment's record:
--           redemption  mesh:txn:{txn:<merchant>:<transaction_id>}     hash (state, redeemed,
--                       reversed_amount, currency)
--           capture     mesh:stl:{stl:<merchant>:<bucket>}:items        hash settlement_id -> JSON
--                       (state, captured, currency)
-- KEYS[2] its refunds, same hash tag   hash  total (reserved + done, minor units), refunded (done),
--           r:<refund_id> JSON entry
-- ARGV[1] refund id (the caller's request_id)   ARGV[2] amount (minor)   ARGV[3] currency
-- ARGV[4] now_ms   ARGV[5] "txn" | "stl"   ARGV[6] the settlement id (capture only)
-- Returns: {"NEW" | "EXISTS", entry state (pending | done | aborted)}.
-- Errors: TRANSACTION_NOT_FOUND, TRANSACTION_NOT_REFUNDABLE {state}, CURRENCY_MISMATCH,
--   IDEMPOTENCY_KEY_REUSED (same refund id, other amount), AMOUNT_EXCEEDS_REFUNDABLE
--   {refundable_minor}.
-- Invariant: total <= what the payment moved (redeemed - voided, or captured): the refunds of a
--   payment, reserved or done, never exceed it, however many run at once.

local state, paid, currency
if ARGV[5] == "stl" then
  local raw = redis.call("HGET", KEYS[1], ARGV[6])
  if not raw then
    return redis.error_reply("TRANSACTION_NOT_FOUND {}")
  end
  local item = cjson.decode(raw)
  state = item.state == "settled" and "approved" or tostring(item.state)
  paid = tonumber(item.captured or 0)
  currency = item.currency
else
  state = redis.call("HGET", KEYS[1], "state")
  if not state then
    return redis.error_reply("TRANSACTION_NOT_FOUND {}")
  end
  paid = tonumber(redis.call("HGET", KEYS[1], "redeemed") or "0")
    - tonumber(redis.call("HGET", KEYS[1], "reversed_amount") or "0")
  currency = redis.call("HGET", KEYS[1], "currency")
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
if currency ~= ARGV[3] then
  return redis.error_reply("CURRENCY_MISMATCH {}")
end
local total = tonumber(redis.call("HGET", KEYS[2], "total") or "0")
local refundable = paid - total
if amount > refundable then
  return redis.error_reply("AMOUNT_EXCEEDS_REFUNDABLE " ..
    cjson.encode({refundable_minor = string.format("%d", math.max(refundable, 0))}))
end
redis.call("HSET", KEYS[2], entry_key,
  cjson.encode({amount = ARGV[2], state = "pending", created_ms = ARGV[4]}))
redis.call("HINCRBY", KEYS[2], "total", amount)
return {"NEW", "pending"}
