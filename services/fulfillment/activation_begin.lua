-- activation_begin.lua: find or create the activation record of one order line.
-- KEYS[1] activation:{m:<merchant>}:<order_id>/<line_id>  (hash)
-- ARGV[1] request fingerprint (keyed HMAC of kind, card/program, amount, currency, promo code)
-- ARGV[2] activation id for a new record   ARGV[3] now_ms   ARGV[4] kind (physical | egift)
-- ARGV[5] order_id   ARGV[6] line_id   ARGV[7] amount_minor   ARGV[8] currency
-- ARGV[9] record ttl ms
-- Returns: {status, HGETALL of the record}; status is
--   NEW        record created (state PENDING, attempt 1), or a FAILED record restarted with the
--              new request (attempt + 1, every step result cleared: a failed line can be redone)
--   RESUME     same request, not finished: the caller continues from the recorded state
--   COMPLETED  same request, already completed
--   MISMATCH   the line already has a live or completed activation for a different request
-- Invariant: one live activation per order line; a line is never restarted unless it FAILED, so
--   an allocated card is never replaced by a second allocation.

local key = KEYS[1]
local state = redis.call("HGET", key, "state")
if not state or state == "FAILED" then
  local attempt = tonumber(redis.call("HGET", key, "attempt") or "0") + 1
  local activation_id = redis.call("HGET", key, "activation_id") or ARGV[2]
  local create_ms = redis.call("HGET", key, "create_ms") or ARGV[3]
  redis.call("DEL", key)
  redis.call("HSET", key,
    "activation_id", activation_id, "attempt", attempt, "fp", ARGV[1], "state", "PENDING",
    "kind", ARGV[4], "order_id", ARGV[5], "line_id", ARGV[6], "amount_minor", ARGV[7],
    "currency", ARGV[8], "create_ms", create_ms, "update_ms", ARGV[3])
  redis.call("PEXPIRE", key, ARGV[9])
  return {"NEW", redis.call("HGETALL", key)}
end
if redis.call("HGET", key, "fp") ~= ARGV[1] then
  return {"MISMATCH", redis.call("HGETALL", key)}
end
if state == "COMPLETED" then
  return {"COMPLETED", redis.call("HGETALL", key)}
end
return {"RESUME", redis.call("HGETALL", key)}
