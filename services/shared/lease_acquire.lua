-- lease_acquire.lua: a job's turn for one merchant (expiry sweep, resolver) under a lease, so
-- replicas take turns instead of repeating each other's provider calls.
-- KEYS[1] the lease hash (mesh:joblease:{job:<job>:<merchant>}).
-- ARGV[1] owner (worker id), ARGV[2] now (epoch ms), ARGV[3] lease (ms).
-- Returns: the fencing token (> 0) when taken (or renewed by its owner), 0 when held by another
--   live owner.
-- Invariant: at most one live owner; the token grows with every new owner (the key never expires:
--   one small hash per job and merchant, so the token never starts over).
local h = redis.call("HMGET", KEYS[1], "owner", "until", "fence")
local now = tonumber(ARGV[2])
if h[1] and h[1] ~= ARGV[1] and tonumber(h[2]) > now then
  return 0
end
local fence = tonumber(h[3] or "0")
if h[1] ~= ARGV[1] or tonumber(h[2] or "0") <= now then
  fence = fence + 1
end
redis.call("HSET", KEYS[1], "owner", ARGV[1], "until", now + tonumber(ARGV[3]), "fence", fence)
return fence
