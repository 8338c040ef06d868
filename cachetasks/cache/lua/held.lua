-- The bytes of this service's files in Redis right now: keys it wrote that are still there.
-- KEYS: OWNED, SIZES.
--#include now
local total = 0
for _, k in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')) do
  if redis.call('EXISTS', k) == 1 then total = total + tonumber(redis.call('HGET', KEYS[2], k) or 0) end
end
return total
