-- emulation_hold_place.lua: record an emulated hold (shadow: reserve against the vendor balance;
-- redeem_at_authorize: record the amount the vendor already redeemed).
-- KEYS[1] hold hash, KEYS[2] expiries zset (hold_id -> expires_at_ms), KEYS[3] held hash
--   (hold_id -> open+pending minor units); all share the tag {gwh:<merchant>:<card hmac>}.
-- ARGV[1] hold_id, ARGV[2] mode (shadow|redeem_at_authorize), ARGV[3] requested minor,
--   ARGV[4] vendor balance minor (shadow) , ARGV[5] allow_partial 0|1, ARGV[6] expires_at_ms,
--   ARGV[7] now_ms, ARGV[8] currency, ARGV[9] reference_id, ARGV[10] vendor transaction id,
--   ARGV[11] retain_ms (how long the record outlives its expiry).
-- Returns JSON {amount, open, held, replayed}. Errors: INSUFFICIENT_FUNDS {available}.
-- Invariant (shadow): the sum of open shadow holds never exceeds the vendor balance seen when
--   each was placed; expired holds stop counting.
local hold_id, mode = ARGV[1], ARGV[2]
local requested, vendor_balance = tonumber(ARGV[3]), tonumber(ARGV[4]) or 0
local allow_partial, expires, now = ARGV[5] == "1", tonumber(ARGV[6]), tonumber(ARGV[7])

local function held_total()
  local expired = redis.call("ZRANGEBYSCORE", KEYS[2], "-inf", "(" .. now)
  for _, id in ipairs(expired) do
    redis.call("HDEL", KEYS[3], id)
  end
  if #expired > 0 then
    redis.call("ZREMRANGEBYSCORE", KEYS[2], "-inf", "(" .. now)
  end
  local total = 0
  for _, v in ipairs(redis.call("HVALS", KEYS[3])) do
    total = total + tonumber(v)
  end
  return total
end

if redis.call("EXISTS", KEYS[1]) == 1 then
  local h = redis.call("HMGET", KEYS[1], "amount", "open")
  return cjson.encode({amount = tonumber(h[1]), open = tonumber(h[2]), held = held_total(), replayed = 1})
end

local amount = requested
local held = 0
if mode == "shadow" then
  held = held_total()
  local available = vendor_balance - held
  if available < 0 then available = 0 end
  if requested > available then
    if not allow_partial or available == 0 then
      return redis.error_reply("INSUFFICIENT_FUNDS " .. cjson.encode({
        message = "balance minus open holds does not cover the amount", available_minor = available}))
    end
    amount = available
  end
  redis.call("ZADD", KEYS[2], expires, hold_id)
  redis.call("HSET", KEYS[3], hold_id, amount)
  held = held + amount
end
redis.call("HSET", KEYS[1], "mode", mode, "amount", amount, "open", amount, "pending", 0,
  "captured", 0, "released", 0, "currency", ARGV[8], "expires_at_ms", expires,
  "reference_id", ARGV[9], "vendor_txn", ARGV[10], "state", "open", "created_ms", now)
redis.call("PEXPIREAT", KEYS[1], expires + tonumber(ARGV[11]))
return cjson.encode({amount = amount, open = amount, held = held, replayed = 0})
