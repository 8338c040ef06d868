-- drop(k): forget cache key k in the ledger. KEYS[1] SIZES, KEYS[2] HELD, KEYS[3] OWNED, KEYS[4] SOURCES.
local function drop(k)
  local old = redis.call('HGET', KEYS[1], k)
  if old then
    redis.call('HDEL', KEYS[1], k)
    redis.call('DECRBY', KEYS[2], old)
  end
  redis.call('ZREM', KEYS[3], k)
  redis.call('HDEL', KEYS[4], k)
end
