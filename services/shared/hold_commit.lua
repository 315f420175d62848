-- hold_commit.lua: the provider confirmed an operation begun by hold_begin: move its reservation
-- into captured, released or transferred (to an advanced hold), and close the hold when nothing
-- stays open.
-- KEYS[1] the hold hash.
-- ARGV[1] operation reference, ARGV[2] amount the provider actually moved (<= reserved amount;
--   for a capture the unmoved rest of the reservation goes back to open), ARGV[3] now (epoch ms).
-- Returns: JSON of the operation (state "done"); committing twice returns the first commit.
-- Errors: HOLD_NOT_FOUND, OPERATION_NOT_FOUND.
-- Invariant: captured + released + transferred + reserved <= authorized; state leaves "open" only
--   when authorized = captured + released + transferred and nothing is reserved.
if redis.call("EXISTS", KEYS[1]) == 0 then
  return redis.error_reply("HOLD_NOT_FOUND {}")
end
local raw = redis.call("HGET", KEYS[1], "op:" .. ARGV[1])
if not raw then
  return redis.error_reply("OPERATION_NOT_FOUND {}")
end
local op = cjson.decode(raw)
if op.state == "done" then
  return raw
end
local moved = math.min(tonumber(ARGV[2]), op.amount)
redis.call("HINCRBY", KEYS[1], "reserved", -op.amount)
if op.kind == "capture" then
  redis.call("HINCRBY", KEYS[1], "captured", moved)
elseif op.kind == "transfer" then
  redis.call("HINCRBY", KEYS[1], "transferred", moved)
else
  redis.call("HINCRBY", KEYS[1], "released", moved)
end
op.state = "done"
op.moved = moved
op.done_ms = tonumber(ARGV[3])
raw = cjson.encode(op)
redis.call("HSET", KEYS[1], "op:" .. ARGV[1], raw)
local h = redis.call("HMGET", KEYS[1], "authorized", "captured", "released", "reserved", "transferred", "state")
local transferred = tonumber(h[5] or "0")
local open = tonumber(h[1]) - tonumber(h[2]) - tonumber(h[3]) - tonumber(h[4]) - transferred
if open <= 0 and tonumber(h[4]) == 0 and h[6] == "open" then
  if tonumber(h[2]) > 0 or transferred > 0 then
    redis.call("HSET", KEYS[1], "state", "closed")
  else
    redis.call("HSET", KEYS[1], "state", "released")
  end
end
return raw
