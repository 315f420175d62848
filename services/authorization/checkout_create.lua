-- checkout_create.lua: write a checkout down BEFORE its first tender is sent (the write-ahead
-- record that crash recovery starts from), once.
-- KEYS[1] the checkout hash (mesh:checkout:{checkout:<merchant>:<bucket>}:<checkout_id>),
--   KEYS[2] the bucket's index of unfinished checkouts (zset, score = created_ms).
-- ARGV[1] now (epoch ms), ARGV[2..] field, value, ... (state "in_progress", tenders, sealed cards).
-- Returns: "new", or the state of the checkout already there (a retry or a takeover).
-- Invariant: every checkout that is not final (approved | declined) is in the index.
local state = redis.call("HGET", KEYS[1], "state")
if state then
  return state
end
redis.call("HSET", KEYS[1], "created_ms", ARGV[1], "state_ms", ARGV[1], unpack(ARGV, 2))
redis.call("ZADD", KEYS[2], ARGV[1], KEYS[1])
return "new"
