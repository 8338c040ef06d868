-- Rename a value streamed into a temporary key into place, all or nothing.
-- KEYS: temporary key, cache key. ARGV: ttl seconds, expected length, 'replace' to replace a value there.
-- Returns -1 when the temporary value lost a part (never published), 0 when a value was already
-- there (kept), 1 when published. A temporary value always has a TTL: one without was re-created
-- by a write after the stream's own value vanished (evicted, expired), and lacks what came before.
if redis.call('STRLEN', KEYS[1]) ~= tonumber(ARGV[2]) or redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('DEL', KEYS[1])
  return -1
end
if ARGV[3] ~= 'replace' and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('DEL', KEYS[1])
  return 0
end
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 1
