-- emulation_op_begin.lua: start a capture or release of an emulated hold: move `amount` from open
-- to pending (still held), or find the operation already started under this reference.
-- KEYS[1] hold hash, KEYS[2] expiries zset, KEYS[3] held hash, KEYS[4] operation hash; one tag.
-- ARGV[1] reference_id, ARGV[2] hold_id, ARGV[3] kind (capture|release), ARGV[4] amount minor or
--   "" for everything open, ARGV[5] now_ms.
-- Returns JSON {state: pending|done, amount, open, result}. Errors: HOLD_NOT_FOUND, HOLD_EXPIRED
--   (capture after expiry), HOLD_NOT_OPEN, AMOUNT_EXCEEDS_OPEN {open_minor}.
-- Invariant: open + pending + captured + released == amount of the hold, all >= 0.
local op = redis.call("HGETALL", KEYS[4])
if #op > 0 then
  local o = {}
  for i = 1, #op, 2 do o[op[i]] = op[i + 1] end
  return cjson.encode({state = o.state, amount = tonumber(o.amount), open = tonumber(redis.call("HGET", KEYS[1], "open") or 0),
    result = o.result or "", kind = o.kind})
end
if redis.call("EXISTS", KEYS[1]) == 0 then
  return redis.error_reply("HOLD_NOT_FOUND " .. cjson.encode({message = "hold not found"}))
end
local h = redis.call("HMGET", KEYS[1], "open", "pending", "expires_at_ms", "state")
local open, pending, expires, state = tonumber(h[1]), tonumber(h[2]), tonumber(h[3]), h[4]
local now = tonumber(ARGV[5])
if ARGV[3] == "capture" and now >= expires then
  return redis.error_reply("HOLD_EXPIRED " .. cjson.encode({message = "hold expired"}))
end
if state ~= "open" then
  return redis.error_reply("HOLD_NOT_OPEN " .. cjson.encode({message = "hold is " .. state}))
end
local amount = open
if ARGV[4] ~= "" then amount = tonumber(ARGV[4]) end
if amount > open then
  return redis.error_reply("AMOUNT_EXCEEDS_OPEN " .. cjson.encode({message = "amount exceeds the open amount", open_minor = open}))
end
redis.call("HSET", KEYS[1], "open", open - amount, "pending", pending + amount)
redis.call("HSET", KEYS[4], "hold_id", ARGV[2], "kind", ARGV[3], "amount", amount, "state", "pending")
redis.call("PEXPIREAT", KEYS[4], redis.call("PEXPIRETIME", KEYS[1]))
return cjson.encode({state = "pending", amount = amount, open = open - amount, result = "", kind = ARGV[3]})
