-- Forget keys whose expiry passed and that are gone; returns how many were dropped.
-- KEYS: SIZES, HELD, OWNED, SOURCES, EVICTED. ARGV: batch size, INFLIGHT prefix, reservation ms.
-- A key still there moves to its new expiry; a reservation whose copy still runs is extended;
-- a file Redis evicted stops being held back once its TTL period is over.
--#include now
--#include drop
local due = redis.call('ZRANGEBYSCORE', KEYS[3], -now, now, 'LIMIT', 0, tonumber(ARGV[1]))
local dropped = 0
for _, k in ipairs(due) do
  local left = redis.call('PTTL', k)
  if left > 0 then
    redis.call('ZADD', KEYS[3], now + left, k)
  elseif left == -2 and redis.call('EXISTS', ARGV[2] .. k) == 1 then
    redis.call('ZADD', KEYS[3], -(now + tonumber(ARGV[3])), k)
  else
    drop(k)
    dropped = dropped + 1
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
return dropped
