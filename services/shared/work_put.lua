-- work_put.lua: add an item (a queued capture, a scheduled reversal) to a merchant bucket's work
-- queue, once; optionally claimed at once by the caller (a capture sent inline).
-- KEYS[1] the bucket's items hash (id -> JSON), KEYS[2] the bucket's due zset (id -> due ms).
-- ARGV[1] item id, ARGV[2] item JSON, ARGV[3] due (epoch ms), ARGV[4] owner ("" = not claimed),
--   ARGV[5] now (epoch ms), ARGV[6] lease (ms).
-- Returns: {"NEW" | "EXISTING", item JSON}; a claimed new item carries fence 1.
-- Invariant: an item is written once; every item not in a final state is in the due zset.
local raw = redis.call("HGET", KEYS[1], ARGV[1])
if raw then
  return {"EXISTING", raw}
end
local item = cjson.decode(ARGV[2])
item.fence = 0
item.attempts = 0
item.owner = ""
local due = tonumber(ARGV[3])
if ARGV[4] ~= "" then
  item.fence = 1
  item.attempts = 1
  item.owner = ARGV[4]
  item.lease_until = tonumber(ARGV[5]) + tonumber(ARGV[6])
  due = item.lease_until
end
raw = cjson.encode(item)
redis.call("HSET", KEYS[1], ARGV[1], raw)
redis.call("ZADD", KEYS[2], due, ARGV[1])
return {"NEW", raw}
