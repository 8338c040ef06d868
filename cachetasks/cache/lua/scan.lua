-- Classify ongoing files for a collect: claim the uncached ones, and the cached ones that need a
-- copy (copied for another document, or due for renewal: a copy then checks storage's version).
-- KEYS: SIZES, HELD, OWNED, SOURCES, EVICTED, then the cache key of each file.
-- ARGV: in-flight ms, ttl ms, INFLIGHT prefix, SKIP prefix, '1' if Redis evicted keys since the
-- last collect, then for each file the document now ongoing there when it changed since the last
-- collect, else '' (the marks' names are built here rather than sent: at 100k files that is 200k
-- key names less to encode and parse).
-- Returns {{state, count, ...}, {the positions (from 1) of the files claimed}, how many of those
-- claims are only a check of storage's version of a cached value}.
-- A file this service cached that vanished before its expiry was evicted if Redis evicted keys
-- meanwhile: it waits for its TTL period to end, since copying it again would only evict another.
-- Otherwise someone deleted it, and it is claimed again at once.
--#include now
--#include classify
--#include drop
local inflight_ms, ttl_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
local evicting = ARGV[5] == '1'
local first = 6  -- KEYS index of the first file
local counts, claimed, rechecks = {}, {}, 0
for i = first, #KEYS do
  local key, position = KEYS[i], i - first + 1
  local mark = ARGV[3] .. key
  local want = ARGV[5 + position]
  local state, detail = classify(key, mark, ARGV[4] .. key, KEYS[3], KEYS[5])
  local claim = false
  if state == 'cached' then
    local source = redis.call('HGET', KEYS[4], key)
    local held_for = source and string.match(source, '^[^\t]*') or ''
    local busy = redis.call('EXISTS', mark) == 1
    if want ~= '' and held_for ~= '' and held_for ~= want and not busy then
      claim = true  -- the value was copied for another document at this address: a re-upload
    elseif detail >= 0 and detail < ttl_ms / 2 then
      redis.call('PEXPIRE', key, ttl_ms)
      redis.call('ZADD', KEYS[3], 'XX', now + ttl_ms, key)
      claim = source ~= false and not busy  -- a copy compares storage's version with the value's
      if claim then rechecks = rechecks + 1 end
    end
  elseif state == 'uncached' and detail and evicting then
    drop(key)
    redis.call('ZADD', KEYS[5], detail, key)
    state = 'evicted'
  elseif state == 'uncached' then
    if detail then drop(key) end
    claim = true
  end
  if claim then
    redis.call('SET', mark, 'queued', 'PX', inflight_ms)
    state = 'claimed'
    claimed[#claimed + 1] = position
  end
  counts[state] = (counts[state] or 0) + 1
end
local flat = {}
for state, n in pairs(counts) do
  flat[#flat + 1] = state
  flat[#flat + 1] = n
end
return {flat, claimed, rechecks}
