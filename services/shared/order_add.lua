-- order_add.lua: index one payment of an order (a redemption txn_... or a capture stl_...), once.
-- KEYS[1] mesh:order:{order:<merchant>:<order_id>}        zset  payment id -> payment sequence
-- KEYS[2] mesh:order:{order:<merchant>:<order_id>}:seq    string, last sequence given out
-- ARGV[1] the payment id (transaction or settlement id; never card data)
-- Returns: the payment's sequence number in its order (1, 2, ...), the first one on a repeat.
-- Invariant: a payment keeps the sequence it was first indexed with, so a retried request does not
--   reorder the order's payments; sequences within an order are strictly increasing.
local seq = redis.call("ZSCORE", KEYS[1], ARGV[1])
if seq then
  return tonumber(seq)
end
seq = redis.call("INCR", KEYS[2])
redis.call("ZADD", KEYS[1], seq, ARGV[1])
return seq
