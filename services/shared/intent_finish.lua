-- intent_finish.lua: record an intent's outcome (or hand it to / take it from the resolver).
-- KEYS[1] the intent hash, KEYS[2] the bucket's pending index.
-- ARGV[1] expected states, comma separated, ARGV[2] new state (pending | resolving | done |
--   failed | reversed), ARGV[3] now (epoch ms), ARGV[4] "resolver claim": when "1", a
--   "resolving" intent is only taken if its claim is older than ARGV[5] (epoch ms), so a
--   resolver that died mid-way is replaced but a live one is not.
-- Returns: {"OK", new state} or {"CONFLICT", current state}; {"MISSING", ""} if no such intent.
-- Invariant: final states leave the pending index and never change again.
local state = redis.call("HGET", KEYS[1], "state")
if not state then
  return {"MISSING", ""}
end
local allowed = false
for expected in string.gmatch(ARGV[1], "[^,]+") do
  if expected == state then
    allowed = true
  end
end
if allowed and ARGV[4] == "1" and state == "resolving" then
  local claimed = tonumber(redis.call("HGET", KEYS[1], "state_ms") or "0")
  if claimed > tonumber(ARGV[5]) then
    allowed = false
  end
end
if not allowed then
  return {"CONFLICT", state}
end
redis.call("HSET", KEYS[1], "state", ARGV[2], "state_ms", ARGV[3])
if ARGV[2] == "done" or ARGV[2] == "failed" or ARGV[2] == "reversed" then
  redis.call("ZREM", KEYS[2], KEYS[1])
end
return {"OK", ARGV[2]}
