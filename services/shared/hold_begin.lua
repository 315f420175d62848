-- hold_begin.lua: reserve part of a hold's open amount for one operation (release or capture)
-- before the provider is called, so concurrent operations can never together exceed what is open.
-- KEYS[1] the hold hash.
-- ARGV[1] operation reference (deterministic per request), ARGV[2] kind "release" | "capture" |
--   "transfer" (the remainder moves to an advanced hold, settlement),
--   ARGV[3] amount in minor units, or "" for everything still open, ARGV[4] now (epoch ms).
-- Returns: JSON of the operation {kind, amount, state = "pending" | "done", moved}; an operation
--   begun before (a retry) returns its existing entry unchanged.
-- Errors: HOLD_NOT_FOUND, HOLD_NOT_OPEN, HOLD_EXPIRED, AMOUNT_EXCEEDS_OPEN.
-- Invariant: captured + released + transferred + reserved <= authorized.
local function fail(reason, meta)
  local body = meta or {}
  return redis.error_reply(reason .. " " .. cjson.encode(body))
end
if redis.call("EXISTS", KEYS[1]) == 0 then
  return fail("HOLD_NOT_FOUND")
end
local existing = redis.call("HGET", KEYS[1], "op:" .. ARGV[1])
if existing then
  return existing
end
local h = redis.call("HMGET", KEYS[1], "state", "expires_at_ms", "authorized", "captured", "released", "reserved",
  "transferred")
if h[1] == "expired" then
  return fail("HOLD_EXPIRED", {expires_at_ms = h[2]})
end
if h[1] ~= "open" then
  return fail("HOLD_NOT_OPEN", {state = h[1]})
end
if tonumber(ARGV[4]) >= tonumber(h[2]) then
  return fail("HOLD_EXPIRED", {expires_at_ms = h[2]})
end
local open = tonumber(h[3]) - tonumber(h[4]) - tonumber(h[5]) - tonumber(h[6]) - tonumber(h[7] or "0")
local amount = open
if ARGV[3] ~= "" then
  amount = tonumber(ARGV[3])
end
if amount > open then
  return fail("AMOUNT_EXCEEDS_OPEN", {open_minor = string.format("%d", open)})
end
if amount <= 0 and ARGV[2] ~= "capture" then
  return fail("HOLD_NOT_OPEN", {state = "nothing open"})
end
local op = cjson.encode({kind = ARGV[2], amount = amount, state = "pending", moved = 0})
redis.call("HINCRBY", KEYS[1], "reserved", amount)
redis.call("HSET", KEYS[1], "op:" .. ARGV[1], op)
return op
