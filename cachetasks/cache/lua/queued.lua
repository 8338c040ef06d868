-- Note the copies a collect has just queued, in the order it queued them: each gets the next number, and
-- its claim is due for renewal at half its life (waiting.lua renews it while its message waits).
-- KEYS: QUEUED_COPIES (copies ever queued), WAITING, WAITING_DUE. ARGV: ms until renewal, then the cache keys.
--#include now
local count = #ARGV - 1
local first = tonumber(redis.call('INCRBY', KEYS[1], count)) - count + 1
local due = now + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[2], first + i - 2, ARGV[i])
  redis.call('ZADD', KEYS[3], due, ARGV[i])
end
return count
