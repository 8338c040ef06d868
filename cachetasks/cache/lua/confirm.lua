-- A copy found storage's version unchanged: keep the value, renew its TTL, release the claim.
-- KEYS: cache key, OWNED, WANTED, in-flight mark. ARGV: ttl ms, owner. Returns 0 if the value is gone.
--#include now
redis.call('HDEL', KEYS[3], KEYS[1])
if redis.call('GET', KEYS[4]) == ARGV[2] then redis.call('DEL', KEYS[4]) end
if redis.call('PEXPIRE', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], 'XX', now + tonumber(ARGV[1]), KEYS[1])
return 1
