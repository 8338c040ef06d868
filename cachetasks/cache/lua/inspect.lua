-- Where each file stands, for `status`; read-only. KEYS: OWNED, EVICTED, then the cache key of each file.
-- ARGV: INFLIGHT prefix, SKIP prefix. A skipped file's state carries its reason: 'skipped:missing'.
--#include now
--#include classify
local out = {}
for i = 3, #KEYS do
  local key = KEYS[i]
  local state = classify(key, ARGV[1] .. key, ARGV[2] .. key, KEYS[1], KEYS[2])
  if state == 'skipped' then state = state .. ':' .. (redis.call('GET', ARGV[2] .. key) or '') end
  out[#out + 1] = state
end
return out
