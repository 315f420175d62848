-- activation_complete.lua: mark an order line's activation COMPLETED and publish its order event,
-- in one step, so the event is published exactly once and only for a completed line.
-- KEYS[1] activation:{m:<merchant>}:<order_id>/<line_id>  (hash)
-- KEYS[2] events:{m:<merchant>}:orders                    (stream; same hash tag)
-- KEYS[3] activations:{m:<merchant>}:unfinished           (zset; same hash tag; the line leaves it)
-- ARGV[1] attempt   ARGV[2] now_ms   ARGV[3] stream max length (approximate trim)
-- ARGV[4] transaction_id of the load
-- ARGV[5] "1" when the resolver completes the line (no caller is there to receive the
--   credentials): the sealed credentials stay, marked "resumed", for the client's retry to receive
-- Returns: {"OK" | "STALE" | "GONE", HGETALL of the record, stream entry id or ""}.
-- Invariant: COMPLETED <=> exactly one line_completed event; sealed credentials are dropped here
--   (the caller hands them out in this response, and the idempotency record keeps them sealed),
--   except on a resolver completion (ARGV[5]), where the next request for the line takes them.

local key = KEYS[1]
local state = redis.call("HGET", key, "state")
if not state then
  return {"GONE", {}, ""}
end
if redis.call("HGET", key, "attempt") ~= ARGV[1] or state ~= "ACTIVATED" then
  return {"STALE", redis.call("HGETALL", key), ""}
end
if ARGV[4] ~= "" then
  redis.call("HSET", key, "transaction_id", ARGV[4])
end
redis.call("HSET", key, "state", "COMPLETED", "update_ms", ARGV[2])
if ARGV[5] == "1" and redis.call("HEXISTS", key, "sealed") == 1 then
  redis.call("HSET", key, "resumed", "1")
else
  redis.call("HDEL", key, "sealed")
end
redis.call("ZREM", KEYS[3], key)
local r = {}
local flat = redis.call("HGETALL", key)
for i = 1, #flat, 2 do r[flat[i]] = flat[i + 1] end
local id = redis.call("XADD", KEYS[2], "MAXLEN", "~", ARGV[3], "*",
  "event", "line_completed",
  "activation_id", r.activation_id, "order_id", r.order_id, "line_id", r.line_id,
  "kind", r.kind, "masked_number", r.masked or "", "amount_minor", r.amount_minor,
  "currency", r.currency, "provider", r.provider or "", "transaction_id", r.transaction_id or "",
  "time_ms", ARGV[2])
return {"OK", flat, id}
