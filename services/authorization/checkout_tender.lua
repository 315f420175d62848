-- checkout_tender.lua: record one tender's progress, only while the checkout is in the state the
-- caller works under (the forward path under "in_progress", compensation under "compensating"), so
-- a tender can never be sent after compensation has begun.
-- KEYS[1] the checkout hash.
-- ARGV[1] tender index, ARGV[2] tender JSON, ARGV[3] required checkout state.
-- Returns: {"OK", state} or {"CONFLICT", state} (nothing written).
-- Invariant: once a checkout is compensating, no tender moves to "attempting".
local state = redis.call("HGET", KEYS[1], "state")
if state ~= ARGV[3] then
  return {"CONFLICT", state or ""}
end
redis.call("HSET", KEYS[1], "t:" .. ARGV[1], ARGV[2])
return {"OK", state}
