-- activation_transition.lua: move an order line's activation one step forward (or to FAILED).
-- KEYS[1] activation:{m:<merchant>}:<order_id>/<line_id>  (hash)
-- KEYS[2] activations:{m:<merchant>}:unfinished           (zset; same hash tag) the index of
--   e-gift lines left ALLOCATED or ACTIVATED, score = update_ms, member = KEYS[1]
-- ARGV[1] attempt the caller works on   ARGV[2] allowed current states, comma separated
-- ARGV[3] new state   ARGV[4] now_ms   ARGV[5..] field, value pairs to set (an empty value deletes
--   the field, e.g. the sealed credentials once they are no longer needed)
-- Returns: {"OK" | "STALE" | "GONE", HGETALL of the record}. STALE: another attempt or a
--   concurrent request moved the record first; nothing was written, the caller re-reads the state.
-- Invariant: states only move along PENDING -> ALLOCATED -> ACTIVATED -> COMPLETED (any live state
--   -> FAILED), one attempt at a time; an e-gift line is in the unfinished index exactly while it
--   is ALLOCATED or ACTIVATED (the states whose credentials sit sealed in the record), so the
--   resolver (FulfillmentLogic.resume) finds every issuance a crash interrupted after allocation.

local key = KEYS[1]
local state = redis.call("HGET", key, "state")
if not state then
  return {"GONE", {}}
end
if redis.call("HGET", key, "attempt") ~= ARGV[1] then
  return {"STALE", redis.call("HGETALL", key)}
end
local allowed = false
for s in string.gmatch(ARGV[2], "[^,]+") do
  if s == state then allowed = true end
end
if not allowed then
  return {"STALE", redis.call("HGETALL", key)}
end
redis.call("HSET", key, "state", ARGV[3], "update_ms", ARGV[4])
for i = 5, #ARGV, 2 do
  if ARGV[i + 1] == "" then
    redis.call("HDEL", key, ARGV[i])
  else
    redis.call("HSET", key, ARGV[i], ARGV[i + 1])
  end
end
local to = ARGV[3]
if (to == "ALLOCATED" or to == "ACTIVATED") and redis.call("HGET", key, "kind") == "egift" then
  redis.call("ZADD", KEYS[2], ARGV[4], key)
elseif to ~= "PENDING" and to ~= "ALLOCATED" and to ~= "ACTIVATED" then
  redis.call("ZREM", KEYS[2], key)
end
return {"OK", redis.call("HGETALL", key)}
