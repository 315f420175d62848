-- hold_abort.lua: the provider refused an operation begun by hold_begin: give its reservation back.
-- KEYS[1] the hold hash.
-- ARGV[1] operation reference.
-- Returns: 1 when a pending reservation was returned, 0 otherwise (unknown or already done).
-- Invariant: only a pending operation's reservation is returned, exactly once.
local raw = redis.call("HGET", KEYS[1], "op:" .. ARGV[1])
if not raw then
  return 0
end
local op = cjson.decode(raw)
if op.state ~= "pending" then
  return 0
end
redis.call("HINCRBY", KEYS[1], "reserved", -op.amount)
redis.call("HDEL", KEYS[1], "op:" .. ARGV[1])
return 1
