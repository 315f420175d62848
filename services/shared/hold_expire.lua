-- hold_expire.lua: a hold past its expiry was released at the provider (the expiry sweep): move
-- what the provider released out of open, and mark the hold expired once nothing is left.
-- KEYS[1] the hold hash.
-- ARGV[1] now (epoch ms), ARGV[2] amount the provider released (minor units, <= open).
-- Returns: {state, released now, still open}. A hold that is not open, or not yet expired, is
--   left unchanged ({state, 0, open}).
-- Errors: HOLD_NOT_FOUND.
-- Invariant: captured + released + transferred + reserved <= authorized; an operation still
--   reserved (a capture sent before the expiry) keeps the hold open until it is committed or
--   aborted, so the sweep never takes back what a capture is using.
if redis.call("EXISTS", KEYS[1]) == 0 then
  return redis.error_reply("HOLD_NOT_FOUND {}")
end
local h = redis.call("HMGET", KEYS[1], "state", "expires_at_ms", "authorized", "captured", "released",
  "reserved", "transferred")
local open = tonumber(h[3]) - tonumber(h[4]) - tonumber(h[5]) - tonumber(h[6]) - tonumber(h[7] or "0")
if h[1] ~= "open" or tonumber(ARGV[1]) < tonumber(h[2]) then
  return {h[1], 0, open}
end
local amount = math.min(math.max(tonumber(ARGV[2]), 0), open)
redis.call("HINCRBY", KEYS[1], "released", amount)
open = open - amount
local state = "open"
if open <= 0 and tonumber(h[6]) == 0 then
  state = "expired"
  redis.call("HSET", KEYS[1], "state", state, "expired_ms", ARGV[1])
end
return {state, amount, open}
