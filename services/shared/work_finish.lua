-- work_finish.lua: record what a claimed item came to, if the claim is still the current one.
-- KEYS[1] the bucket's items hash, KEYS[2] the bucket's due zset, KEYS[3] the bucket's finished
--   zset (id -> when it became final; work_purge drops items past the retention).
-- ARGV[1] item id, ARGV[2] fence of the caller's claim, ARGV[3] JSON of fields to set,
--   ARGV[4] "1" final (leaves the queue) | "0" back to the queue, ARGV[5] due (epoch ms) when
--   not final, ARGV[6] now (epoch ms).
-- Returns: {"OK", item JSON} or {"STALE", item JSON} (another claim took it: nothing changed);
--   {"MISSING", ""} when there is no such item.
-- Invariant: only the holder of the newest fence changes an item; a final item is never due.
local raw = redis.call("HGET", KEYS[1], ARGV[1])
if not raw then
  return {"MISSING", ""}
end
local item = cjson.decode(raw)
if tostring(item.fence) ~= ARGV[2] then
  return {"STALE", raw}
end
for k, v in pairs(cjson.decode(ARGV[3])) do
  item[k] = v
end
item.owner = ""
item.lease_until = 0
raw = cjson.encode(item)
redis.call("HSET", KEYS[1], ARGV[1], raw)
if ARGV[4] == "1" then
  redis.call("ZREM", KEYS[2], ARGV[1])
  redis.call("ZADD", KEYS[3], tonumber(ARGV[6]), ARGV[1])
else
  redis.call("ZADD", KEYS[2], tonumber(ARGV[5]), ARGV[1])
end
return {"OK", raw}
