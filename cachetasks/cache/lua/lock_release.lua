-- Release a lock held with `token`. KEYS: the lock. ARGV: token. Returns 0 when it is not ours.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
