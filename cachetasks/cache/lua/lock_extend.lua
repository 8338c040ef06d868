-- Extend a lock held with `token`. KEYS: the lock. ARGV: token, ms. Returns 0 when it is not ours.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
