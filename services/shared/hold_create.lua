-- hold_create.lua: record a hold the provider has approved (once; a retry finds it).
-- KEYS[1] the hold hash (mesh:hold:{hold:<merchant>:<hold_id>}).
-- ARGV: field, value, field, value, ... (the whole record; state "open", captured/released/
--   reserved "0").
-- Returns: 1 when created (the record is exactly ARGV); when the hold already existed, nothing is
--   changed and the stored record is returned (HGETALL's flat field/value list), so the caller
--   never reads it back in a second round trip.
-- Invariant: a hold record is written once; amounts change only through hold_begin/commit/abort.
if redis.call("EXISTS", KEYS[1]) == 1 then
  return redis.call("HGETALL", KEYS[1])
end
redis.call("HSET", KEYS[1], unpack(ARGV))
return 1
