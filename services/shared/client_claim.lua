-- client_claim.lua: bind a caller's client_transaction_id to the operation about to be sent,
-- before the provider is called, so a later reversal by that id finds it.
-- KEYS[1] the client index hash (mesh:client:{client:<merchant>:<client_transaction_id>}).
-- ARGV[1] target kind ("redemption" | "hold"), ARGV[2] target id (transaction or hold id),
--   ARGV[3] provider reference_id, ARGV[4] sealed card, ARGV[5] now (epoch ms).
-- Returns: "NEW" (bound now) or "EXISTING" (already bound to this same target: a retry).
-- Errors: TRANSACTION_REVERSED (the id was reversed before it arrived: refused for good),
--   CLIENT_TRANSACTION_ID_REUSED (bound to another operation).
-- Invariant: a client_transaction_id names at most one operation, and never one after its
--   reversal-before-arrival tombstone.
local raw = redis.call("HMGET", KEYS[1], "tombstone", "target_id")
if raw[1] == "1" then
  return redis.error_reply("TRANSACTION_REVERSED {}")
end
if raw[2] then
  if raw[2] == ARGV[2] then
    return "EXISTING"
  end
  return redis.error_reply("CLIENT_TRANSACTION_ID_REUSED {}")
end
redis.call("HSET", KEYS[1], "target_kind", ARGV[1], "target_id", ARGV[2], "reference_id", ARGV[3],
  "card", ARGV[4], "created_ms", ARGV[5])
return "NEW"
