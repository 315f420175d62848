-- checkout_state.lua: move a checkout between in_progress -> compensating -> approved | declined,
-- storing the final response with the final state.
-- KEYS[1] the checkout hash, KEYS[2] the bucket's index of unfinished checkouts.
-- ARGV[1] expected states (comma separated), ARGV[2] new state, ARGV[3] now (epoch ms),
--   ARGV[4] claim cutoff (epoch ms) or "": when set, the checkout is only taken if its state was
--   last changed before the cutoff (a live worker is never taken over by the recovery sweep),
--   ARGV[5] serialized response or "".
-- Returns: {"OK", new state} or {"CONFLICT", current state}.
-- Invariant: final states leave the index and never change again.
local h = redis.call("HMGET", KEYS[1], "state", "state_ms")
if not h[1] then
  return {"CONFLICT", ""}
end
local allowed = false
for expected in string.gmatch(ARGV[1], "[^,]+") do
  if expected == h[1] then
    allowed = true
  end
end
if allowed and ARGV[4] ~= "" and tonumber(h[2]) > tonumber(ARGV[4]) then
  allowed = false
end
if not allowed then
  return {"CONFLICT", h[1]}
end
redis.call("HSET", KEYS[1], "state", ARGV[2], "state_ms", ARGV[3])
if ARGV[5] ~= "" then
  redis.call("HSET", KEYS[1], "response", ARGV[5])
end
if ARGV[2] == "approved" or ARGV[2] == "declined" then
  redis.call("ZREM", KEYS[2], KEYS[1])
end
return {"OK", ARGV[2]}
