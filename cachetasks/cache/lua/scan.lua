-- Classify ongoing files for a collect, claim the uncached ones, renew the cached ones.
-- KEYS: OWNED, SIZES, HELD, then the cache key of each file.
-- ARGV: in-flight ms, ttl ms, INFLIGHT prefix, SKIP prefix (the marks' names are built here rather
-- than sent: at 100k files that is 200k key names less to encode and parse).
-- Returns {{state, count, ...}, {the positions (from 1) of the files claimed}}.
-- A cached key whose TTL fell below half is renewed: a file stays hot while it is ongoing.
-- An evicted key waits for its TTL period to end: copying it again would only evict another file.
--#include now
--#include classify
local inflight_ms, ttl_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
local counts, claimed = {}, {}
for i = 4, #KEYS do
  local key = KEYS[i]
  local state, left = classify(key, ARGV[3] .. key, ARGV[4] .. key, KEYS[1])
  if state == 'cached' then
    if left >= 0 and left < ttl_ms / 2 then
      redis.call('PEXPIRE', key, ttl_ms)
      redis.call('ZADD', KEYS[1], 'XX', now + ttl_ms, key)
    end
  elseif state == 'evicted' then
    local size = redis.call('HGET', KEYS[2], key)
    if size then
      redis.call('HDEL', KEYS[2], key)
      redis.call('DECRBY', KEYS[3], size)
    end
  elseif state == 'uncached' then
    redis.call('SET', ARGV[3] .. key, 'queued', 'PX', inflight_ms)
    state = 'claimed'
    claimed[#claimed + 1] = i - 3
  end
  counts[state] = (counts[state] or 0) + 1
end
local flat = {}
for state, n in pairs(counts) do
  flat[#flat + 1] = state
  flat[#flat + 1] = n
end
return {flat, claimed}
