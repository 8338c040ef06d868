-- Extend (ms > 0) or release (ms = 0) a claim, only if `owner` holds it.
-- KEYS: in-flight mark. ARGV: owner, ms.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) == 0 then return redis.call('DEL', KEYS[1]) end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
