-- Count `size` bytes for a key about to be written, unless that passes `limit`; 1 if counted.
-- KEYS: SIZES, HELD, OWNED. ARGV: key, size, limit (0: none), reservation ms.
-- OWNED scores a written key by its expiry and a reservation by minus its deadline, so a
-- reservation is never mistaken for a key Redis evicted: a copy that died is retried.
--#include now
local old = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or 0)
local held = tonumber(redis.call('GET', KEYS[2]) or 0) - old
if tonumber(ARGV[3]) > 0 and held + tonumber(ARGV[2]) > tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('INCRBY', KEYS[2], tonumber(ARGV[2]) - old)
redis.call('ZADD', KEYS[3], -(now + tonumber(ARGV[4])), ARGV[1])
return 1
