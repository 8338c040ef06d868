-- classify(key, inflight, skip, owned, evicted): where the file at `key` stands (FileState in
-- states.py), and a detail: the key's PTTL when cached; when uncached, the expiry this service had
-- given it if it vanished before that (evicted or deleted: the collect judges which).
-- `inflight` and `skip` are its marks (`inflight` false: look past it); `owned` the sorted set of
-- the keys this service wrote and `evicted` of those Redis evicted, scored by expiry. Needs `now`.
-- Every script that reads a file's state reads it through this, in this order.
local function classify(key, inflight, skip, owned, evicted)
  local left = redis.call('PTTL', key)
  if left ~= -2 then return 'cached', left end
  if inflight and redis.call('EXISTS', inflight) == 1 then return 'in-flight' end
  if redis.call('EXISTS', skip) == 1 then return 'skipped' end
  if tonumber(redis.call('ZSCORE', evicted, key) or 0) > now then return 'evicted' end
  local expiry = tonumber(redis.call('ZSCORE', owned, key) or 0)
  if expiry > now then return 'uncached', expiry end
  return 'uncached'
end
