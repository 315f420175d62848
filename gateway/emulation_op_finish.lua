-- emulation_op_finish.lua: end a started capture/release: commit (the vendor side is done) or
-- abort (the vendor refused: the amount goes back to open).
-- KEYS[1] hold hash, KEYS[2] expiries zset, KEYS[3] held hash, KEYS[4] operation hash; one tag.
-- ARGV[1] hold_id, ARGV[2] commit|abort, ARGV[3] result JSON (vendor transaction, balance),
--   ARGV[4] release_remainder 0|1 (commit of a capture: nothing stays open).
-- Returns JSON {amount, open, result}. Errors: OPERATION_NOT_FOUND.
-- Invariant: open + pending + captured + released == amount; a closed hold is not held.
local op = redis.call("HMGET", KEYS[4], "kind", "amount", "state", "result")
if not op[3] then
  return redis.error_reply("OPERATION_NOT_FOUND " .. cjson.encode({message = "no such hold operation"}))
end
local kind, amount = op[1], tonumber(op[2])
if op[3] == "done" then
  return cjson.encode({amount = amount, open = tonumber(redis.call("HGET", KEYS[1], "open") or 0), result = op[4] or ""})
end
local h = redis.call("HMGET", KEYS[1], "open", "pending", "captured", "released", "mode")
local open, pending, captured, released = tonumber(h[1]), tonumber(h[2]), tonumber(h[3]), tonumber(h[4])
pending = pending - amount
if ARGV[2] == "abort" then
  open = open + amount
  redis.call("DEL", KEYS[4])
else
  if kind == "capture" then captured = captured + amount else released = released + amount end
  if ARGV[4] == "1" then
    released = released + open
    open = 0
  end
  redis.call("HSET", KEYS[4], "state", "done", "result", ARGV[3])
end
local state = "open"
if open == 0 and pending == 0 then state = "closed" end
redis.call("HSET", KEYS[1], "open", open, "pending", pending, "captured", captured, "released", released, "state", state)
if h[5] == "shadow" then
  if state == "closed" then
    redis.call("HDEL", KEYS[3], ARGV[1])
    redis.call("ZREM", KEYS[2], ARGV[1])
  elseif redis.call("ZSCORE", KEYS[2], ARGV[1]) then
    redis.call("HSET", KEYS[3], ARGV[1], open + pending)
  end
end
return cjson.encode({amount = amount, open = open, result = ARGV[3]})
