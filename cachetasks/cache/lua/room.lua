-- Is there room in Redis for `needed` more bytes, counting the room promised to copies still writing?
-- KEYS: PROMISED (hash: cache key -> bytes promised to the copy that holds its claim), and the cache key to
-- promise the room to when it fits (none: only ask). ARGV: bytes needed, fill ratio, INFLIGHT prefix.
-- Returns {1 if it fits (and is promised) or 0, used_memory, bytes promised to other copies, maxmemory}.
-- A promise lasts as long as its file's claim: a copy that ended, or died, promises nothing any more.
local info = redis.call('INFO', 'memory')
local used = tonumber(string.match(info, '\nused_memory:(%d+)'))
local max = tonumber(string.match(info, '\nmaxmemory:(%d+)'))
if max == 0 then return {1, used, 0, 0} end
local promised = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if redis.call('EXISTS', ARGV[3] .. all[i]) == 1 then
    promised = promised + tonumber(all[i + 1])
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
local needed = tonumber(ARGV[1])
if used + promised + needed > max * tonumber(ARGV[2]) then return {0, used, promised, max} end
if KEYS[2] then redis.call('HSET', KEYS[1], KEYS[2], needed) end
return {1, used, promised, max}
