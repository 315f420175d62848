-- refund_settle.lua: close a reserved refund once the card credit's outcome is known.
-- KEYS[1] the refunds hash of one payment (see refund_reserve.lua)
-- ARGV[1] refund id   ARGV[2] "done" (credited) | "aborted" (refused: the reservation returns)
-- ARGV[3] now_ms   ARGV[4] the credit's provider transaction id ("" when aborted)
-- Returns: the entry's state after the call (a settled entry is left as it was).
-- Errors: REFUND_NOT_FOUND.
-- Invariant: an entry settles once; total drops only by an aborted entry's amount, refunded grows
--   only by a done entry's amount.

local entry_key = "r:" .. ARGV[1]
local raw = redis.call("HGET", KEYS[1], entry_key)
if not raw then
  return redis.error_reply("REFUND_NOT_FOUND {}")
end
local entry = cjson.decode(raw)
if entry.state ~= "pending" then
  return entry.state
end
entry.state = ARGV[2]
entry.settled_ms = ARGV[3]
entry.provider_transaction_id = ARGV[4]
redis.call("HSET", KEYS[1], entry_key, cjson.encode(entry))
if ARGV[2] == "aborted" then
  redis.call("HINCRBY", KEYS[1], "total", -tonumber(entry.amount))
else
  redis.call("HINCRBY", KEYS[1], "refunded", tonumber(entry.amount))
end
return entry.state
