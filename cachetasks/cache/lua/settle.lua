-- The end of every copy, in one round trip: account the key written (committing its reservation, if
-- any) or drop a reservation that wrote nothing, then release the owner's claim.
-- KEYS: SIZES, HELD, OWNED, in-flight mark. ARGV: key, bytes stored (-1: none), ttl ms, owner.
--#include now
--#include drop
local key, size = ARGV[1], tonumber(ARGV[2])
if size >= 0 then
  local old = tonumber(redis.call('HGET', KEYS[1], key) or 0)
  redis.call('HSET', KEYS[1], key, size)
  redis.call('INCRBY', KEYS[2], size - old)
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), key)
elseif tonumber(redis.call('ZSCORE', KEYS[3], key) or 0) < 0 then
  drop(key)
end
if redis.call('GET', KEYS[4]) == ARGV[4] then redis.call('DEL', KEYS[4]) end
