-- The end of every copy that got as far as writing, in one round trip: account the key written
-- (committing its reservation, if any) with the source its value was copied from, or drop a
-- reservation that wrote nothing; then release the owner's claim and the collect's request.
-- KEYS: SIZES, HELD, OWNED, SOURCES, EVICTED, WANTED, in-flight mark.
-- ARGV: key, bytes stored (-1: none), ttl ms, owner, source ("document<TAB>version").
--#include now
--#include drop
local key, size = ARGV[1], tonumber(ARGV[2])
if size >= 0 then
  local old = tonumber(redis.call('HGET', KEYS[1], key) or 0)
  redis.call('HSET', KEYS[1], key, size)
  redis.call('INCRBY', KEYS[2], size - old)
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), key)
  redis.call('HSET', KEYS[4], key, ARGV[5])
  redis.call('ZREM', KEYS[5], key)
elseif tonumber(redis.call('ZSCORE', KEYS[3], key) or 0) < 0 then
  local left = redis.call('PTTL', key)
  if left > 0 then
    -- Another copy wrote the key meanwhile: account what is there, not this copy's reservation.
    local there = redis.call('STRLEN', key)
    local old = tonumber(redis.call('HGET', KEYS[1], key) or 0)
    redis.call('HSET', KEYS[1], key, there)
    redis.call('INCRBY', KEYS[2], there - old)
    redis.call('ZADD', KEYS[3], now + left, key)
  else
    drop(key)
  end
end
redis.call('HDEL', KEYS[6], key)
if redis.call('GET', KEYS[7]) == ARGV[4] then redis.call('DEL', KEYS[7]) end
