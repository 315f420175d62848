-- client_release.lua: unbind a caller's client_transaction_id from an operation the provider
-- refused for good (nothing moved), so the refusal leaves no state behind.
-- KEYS[1] the client index hash (mesh:client:{client:<merchant>:<client_transaction_id>}).
-- ARGV[1] the target id the refused operation bound.
-- Returns: 1 when released, 0 when the id is bound to something else or tombstoned (kept).
-- Invariant: only the binding of the refused operation itself is ever removed.
local raw = redis.call("HMGET", KEYS[1], "tombstone", "target_id")
if raw[1] ~= "1" and raw[2] == ARGV[1] then
  redis.call("DEL", KEYS[1])
  return 1
end
return 0
