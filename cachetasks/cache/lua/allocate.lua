-- Allocate a temporary value of ARGV[1] zero bytes that lives ARGV[2] ms, for a stream written in place:
-- the value and its TTL in one step, so that a value without a TTL is never this stream's.
-- KEYS: temporary key.
redis.call('SETRANGE', KEYS[1], tonumber(ARGV[1]) - 1, '\0')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
