-- work_claim.lua: take up to N due items of one bucket under a lease with a new fencing token.
-- KEYS[1] the bucket's items hash, KEYS[2] the bucket's due zset.
-- ARGV[1] now (epoch ms), ARGV[2] lease (ms), ARGV[3] owner (worker id), ARGV[4] max items,
--   ARGV[5] item id to take ("" = any due items): a specific item is taken only if it is due.
-- Returns: list of item JSON, each with its new fence, owner and lease_until.
-- Invariant: an item is held by at most one live lease; its due score is the lease end while
--   claimed, so a dead worker's items become due again, and the fence grows with every claim
--   so a worker whose lease was taken over can no longer record an outcome (work_finish).
local now = tonumber(ARGV[1])
local ids
if ARGV[5] ~= "" then
  local score = redis.call("ZSCORE", KEYS[2], ARGV[5])
  if not score or tonumber(score) > now then
    return {}
  end
  ids = {ARGV[5]}
else
  ids = redis.call("ZRANGEBYSCORE", KEYS[2], "-inf", now, "LIMIT", 0, tonumber(ARGV[4]))
end
local taken = {}
for _, id in ipairs(ids) do
  local raw = redis.call("HGET", KEYS[1], id)
  if not raw then
    redis.call("ZREM", KEYS[2], id)
  else
    local item = cjson.decode(raw)
    item.fence = (item.fence or 0) + 1
    item.attempts = (item.attempts or 0) + 1
    item.owner = ARGV[3]
    item.lease_until = now + tonumber(ARGV[2])
    raw = cjson.encode(item)
    redis.call("HSET", KEYS[1], id, raw)
    redis.call("ZADD", KEYS[2], item.lease_until, id)
    taken[#taken + 1] = raw
  end
end
return taken
