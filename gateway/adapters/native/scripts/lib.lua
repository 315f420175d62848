-- lib.lua: helpers shared by every native-ledger script. ledger.py prepends this file to each
-- script before registering it (Redis has no `require`, and ten private copies would drift apart).
-- It defines functions and reads ARGV only; it writes nothing by itself.
--
-- KEYS (the same seven, in this order, for every ledger script; all carry ONE card's hash tag
-- {gc:<merchant>:<card_id>} so each script touches a single Redis Cluster slot):
--   KEYS[1] card         hash  masked, status, balance, held, currency, pin (HMAC), pin_fail,
--                              locked_until, created_ms
--   KEYS[2] history      list  JSON entries, RPUSH only (append-only audit trail)
--   KEYS[3] holds        hash  hold_id -> JSON hold {amount_minor, captured_minor, released_minor,
--                              state open|closed|expired, expires_at_ms, ...}; stored without
--                              hold_id, currency and zero amounts (load_hold restores them)
--   KEYS[4] hold_expiry  zset  hold_id of every OPEN hold, scored by expires_at_ms
--   KEYS[5] txns         hash  transaction_id -> JSON record {kind, fp, result, reversed_by, ...};
--                              result without what the record says (replay_result restores it)
--   KEYS[6] client_txns  hash  client_txn_id -> JSON {fp, txn} or a tombstone {tombstone, txn}
--   KEYS[7] escrows      hash  escrow_id -> JSON exchange out-leg (exchange scripts only)
-- ARGV header (the same for every script; operation arguments start at ARGV[10]):
--   ARGV[1] now_ms   ARGV[2] client_txn_id or ""   ARGV[3] request fingerprint
--   ARGV[4] id for a new transaction   ARGV[5] PIN HMAC or ""   ARGV[6] "1" if a PIN is required
--   ARGV[7] PIN failures before lockout   ARGV[8] lockout ms   ARGV[9] max balance (minor units):
--   the ledger's own cap, or the merchant's lower one for this call (credit, activate)
-- Errors: raised as {err = "REASON {json}"}; ledger.py maps REASON to a gRPC code. Validation
-- happens before any money write, so a refused call changes nothing except the PIN-failure counter
-- and the lazy expiry of holds (both are meant to stick).
-- Invariants every script keeps: balance >= 0; 0 <= held <= balance; the history deltas sum to the
-- balance; per hold captured + released <= amount.

local NOW = tonumber(ARGV[1])
local CLIENT_TXN = ARGV[2]
local FINGERPRINT = ARGV[3]
local NEW_TXN = ARGV[4]
local PIN = ARGV[5]
local PIN_REQUIRED = ARGV[6] == "1"
local MAX_PIN_FAILURES = tonumber(ARGV[7])
local PIN_LOCK_MS = tonumber(ARGV[8])
local MAX_BALANCE = tonumber(ARGV[9])

-- Integers as exact decimal strings: tostring() would print 1e+15 for large numbers.
local function int(n)
  return string.format("%d", n)
end

local function fail(reason, message, meta)
  local body = meta or {}
  body.message = message
  error({err = reason .. " " .. cjson.encode(body)})
end

local function load_card()
  local flat = redis.call("HGETALL", KEYS[1])
  if #flat == 0 then
    return nil
  end
  local c = {}
  for i = 1, #flat, 2 do
    c[flat[i]] = flat[i + 1]
  end
  c.balance = tonumber(c.balance)
  c.held = tonumber(c.held)
  c.pin_fail = tonumber(c.pin_fail or "0")
  c.locked_until = tonumber(c.locked_until or "0")
  return c
end

local function require_card(c)
  if not c then
    fail("CARD_NOT_FOUND", "card not found")
  end
  return c
end

local function require_active(c)
  if c.status ~= "active" then
    fail("CARD_INACTIVE", "card is not active", {status = c.status})
  end
end

local function require_currency(c, currency)
  if c.currency ~= currency then
    fail("CURRENCY_MISMATCH", "currency differs from the card's", {card_currency = c.currency})
  end
end

local function require_room(c, amount)
  if c.balance + amount > MAX_BALANCE then
    fail("BALANCE_LIMIT_EXCEEDED", "credit would exceed the card's maximum balance",
      {max_balance_minor = int(MAX_BALANCE)})
  end
end

local function save_card(c)
  redis.call("HSET", KEYS[1], "balance", int(c.balance), "held", int(c.held), "status", c.status)
end

-- A wrong PIN is counted and the count is kept even though the call fails (Redis does not roll
-- back a script's earlier writes): that is what makes the lockout work.
local function check_pin(c)
  if not c.pin or c.pin == "" then
    return
  end
  if c.locked_until > NOW then
    fail("CARD_LOCKED", "card locked after repeated PIN failures",
      {locked_until_ms = int(c.locked_until)})
  end
  if PIN == "" then
    if PIN_REQUIRED then
      fail("INVALID_PIN", "PIN required")
    end
    return
  end
  if PIN ~= c.pin then
    local failures = c.pin_fail + 1
    if failures >= MAX_PIN_FAILURES then
      local until_ms = NOW + PIN_LOCK_MS
      redis.call("HSET", KEYS[1], "pin_fail", "0", "locked_until", int(until_ms))
      fail("INVALID_PIN", "incorrect PIN; card now locked", {locked_until_ms = int(until_ms)})
    end
    redis.call("HSET", KEYS[1], "pin_fail", int(failures))
    fail("INVALID_PIN", "incorrect PIN", {attempts_left = int(MAX_PIN_FAILURES - failures)})
  end
  if c.pin_fail > 0 then
    redis.call("HSET", KEYS[1], "pin_fail", "0")
  end
end

local function append_history(c, txn_id, kind, delta, client_txn_id, fields)
  local entry = {
    transaction_id = txn_id, kind = kind, amount_minor = delta, balance_minor = c.balance,
    held_minor = c.held, client_txn_id = client_txn_id, ts_ms = NOW,
  }
  for k, v in pairs(fields or {}) do
    entry[k] = v
  end
  redis.call("RPUSH", KEYS[2], cjson.encode(entry))
end

-- A hold is stored without what its key and card already say (hold_id = the hash field,
-- currency = the card's) and without zero captured/released amounts: at 100k open holds those
-- fields were ~90 of the ~1150 bytes each hold costs (bench/: Redis memory per open hold).
-- load_hold gives the full table back, so scripts and hold_read see every field.
local function load_hold(hold_id)
  local raw = redis.call("HGET", KEYS[3], hold_id)
  if not raw then
    fail("HOLD_NOT_FOUND", "hold not found")
  end
  local h = cjson.decode(raw)
  h.hold_id = hold_id
  h.captured_minor = h.captured_minor or 0
  h.released_minor = h.released_minor or 0
  if not h.currency then
    h.currency = redis.call("HGET", KEYS[1], "currency")
  end
  return h
end

local function save_hold(h)
  local stored = {}
  for k, v in pairs(h) do
    stored[k] = v
  end
  stored.hold_id, stored.currency, stored.open_minor = nil, nil, nil
  if stored.captured_minor == 0 then
    stored.captured_minor = nil
  end
  if stored.released_minor == 0 then
    stored.released_minor = nil
  end
  redis.call("HSET", KEYS[3], h.hold_id, cjson.encode(stored))
  if h.state ~= "open" then
    redis.call("ZREM", KEYS[4], h.hold_id)
  end
end

local function open_amount(h)
  if h.state ~= "open" then
    return 0
  end
  return h.amount_minor - h.captured_minor - h.released_minor
end

-- Lazy expiry: a hold whose expires_at_ms has passed stops counting against the balance. Run by
-- every script that reads held/available, so `held` only ever covers open, unexpired holds.
local function purge_expired_holds(c)
  local expired = redis.call("ZRANGEBYSCORE", KEYS[4], "-inf", ARGV[1])
  if #expired == 0 then
    return
  end
  for _, hold_id in ipairs(expired) do
    local h = load_hold(hold_id)
    local open = open_amount(h)
    h.state = "expired"
    c.held = c.held - open
    save_hold(h)
    append_history(c, h.transaction_id, "hold_expired", 0, "", {hold_id = hold_id, released_minor = open})
  end
  save_card(c)
end

local function open_hold_for(c, hold_id)
  local h = load_hold(hold_id)
  if h.state == "expired" then
    fail("HOLD_EXPIRED", "hold expired", {expires_at_ms = int(h.expires_at_ms)})
  end
  if h.state ~= "open" then
    fail("HOLD_NOT_OPEN", "hold is " .. h.state)
  end
  return h
end

local function replay_result(txn_id)
  local rec = cjson.decode(redis.call("HGET", KEYS[5], txn_id))
  local result = rec.result
  -- Fields commit() leaves out of the stored result because the record already says them.
  result.transaction_id = result.transaction_id or txn_id
  result.amount_minor = result.amount_minor or rec.amount_minor
  result.hold_id = result.hold_id or rec.hold_id or ""
  if not result.currency then
    result.currency = redis.call("HGET", KEYS[1], "currency")
  end
  result.extra = result.extra or {}
  result.extra.replayed = true
  if rec.reversed_by then
    result.extra.reversed_by = rec.reversed_by
  end
  return result
end

-- Idempotency per card: the same client_txn_id + same request replays the first result; a
-- different request is refused; a client_txn_id reversed before it arrived is refused for good.
-- Returns the stored result table (callers encode it) or nil when this is a new request.
local function replay()
  if CLIENT_TXN == "" then
    return nil
  end
  local raw = redis.call("HGET", KEYS[6], CLIENT_TXN)
  if not raw then
    return nil
  end
  local index = cjson.decode(raw)
  if index.tombstone then
    fail("TRANSACTION_REVERSED", "this transaction was reversed before it arrived",
      {reversal_transaction_id = index.txn})
  end
  if index.fp ~= FINGERPRINT then
    fail("IDEMPOTENCY_KEY_REUSED", "client_txn_id already used for a different request")
  end
  return replay_result(index.txn)
end

-- Writes one transaction: card totals, history entry, transaction record, idempotency index.
-- `t` = {kind, delta, amount, hold_id?, extra?, history?, record?}; returns the result as JSON.
local function commit(c, t)
  save_card(c)
  local history = t.history or {}
  if t.hold_id then
    history.hold_id = t.hold_id
  end
  append_history(c, NEW_TXN, t.kind, t.delta, CLIENT_TXN, history)
  local result = {
    transaction_id = NEW_TXN, amount_minor = t.amount, balance_minor = c.balance,
    held_minor = c.held, currency = c.currency, hold_id = t.hold_id or "", extra = t.extra or {},
  }
  local rec = {
    kind = t.kind, delta = t.delta, amount_minor = t.amount, hold_id = t.hold_id or "",
    client_txn_id = CLIENT_TXN, fp = FINGERPRINT, ts_ms = NOW, result = result,
  }
  for k, v in pairs(t.record or {}) do
    rec[k] = v
  end
  -- The stored result leaves out what the record says already (its key, its amount and hold,
  -- the card's currency); replay_result puts them back. ~100 bytes of every transaction record.
  local stored = {}
  for k, v in pairs(result) do
    stored[k] = v
  end
  stored.transaction_id = nil
  if stored.currency == c.currency then
    stored.currency = nil
  end
  if stored.amount_minor == rec.amount_minor then
    stored.amount_minor = nil
  end
  if stored.hold_id == rec.hold_id then
    stored.hold_id = nil
  end
  if next(stored.extra) == nil then
    stored.extra = nil
  end
  rec.result = stored
  if CLIENT_TXN ~= "" then
    rec.fp = nil  -- the client_txns index entry holds it; replay() checks it there
  end
  redis.call("HSET", KEYS[5], NEW_TXN, cjson.encode(rec))
  if CLIENT_TXN ~= "" then
    redis.call("HSET", KEYS[6], CLIENT_TXN, cjson.encode({fp = FINGERPRINT, txn = NEW_TXN}))
  end
  return cjson.encode(result)
end

-- A new card record (provisioning, sell-activation, exchange target).
local function new_card(masked, currency, status, balance)
  local c = {
    masked = masked, currency = currency, status = status, balance = balance, held = 0,
    pin = PIN, pin_fail = 0, locked_until = 0,
  }
  redis.call("HSET", KEYS[1], "masked", masked, "currency", currency, "pin", PIN,
    "pin_fail", "0", "locked_until", "0", "created_ms", ARGV[1])
  return c
end

-- The caller-facing state of a card (CardState in ledger.py).
local function card_state(c)
  return {masked_number = c.masked, status = c.status, balance_minor = c.balance,
    held_minor = c.held, currency = c.currency}
end

-- ---------------------------------------------------------------------------------------------
