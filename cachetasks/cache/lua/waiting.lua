-- Keep the claims of copies whose messages still wait in the queue; forget those whose messages left it.
-- KEYS: QUEUED_COPIES, WAITING (cache key -> number of its copy), WAITING_DUE (cache key -> renewal due, ms).
-- ARGV: messages in the queue now, in-flight ms, INFLIGHT prefix. Returns how many claims were renewed.
-- The queue is first in, first out: of the copies queued so far, all but the last `waiting` have left it.
-- A claim whose message left is not renewed any more: its copy takes it over, or (a worker died holding the
-- message) it lapses after the in-flight TTL and the next collect queues the file again.
--#include now
local left = tonumber(redis.call('GET', KEYS[1]) or 0) - tonumber(ARGV[1])
for _, key in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', left)) do
  redis.call('ZREM', KEYS[3], key)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', left)
local ms = tonumber(ARGV[2])
local renewed = 0
for _, key in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)) do
  local mark = ARGV[3] .. key
  if redis.call('GET', mark) == 'queued' then
    redis.call('PEXPIRE', mark, ms)
    redis.call('ZADD', KEYS[3], now + math.floor(ms / 2), key)
    renewed = renewed + 1
  else -- taken by its copy, or gone: nothing to keep
    redis.call('ZREM', KEYS[2], key)
    redis.call('ZREM', KEYS[3], key)
  end
end
return renewed
