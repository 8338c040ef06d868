-- classify(key, inflight, skip, owned): where the file at `key` stands (FileState in states.py), and
-- its key's PTTL when cached. `inflight` and `skip` are its marks (`inflight` false: look past it);
-- `owned` the sorted set of the keys this service wrote, scored by expiry. Needs `now`.
-- Every script that reads a file's state reads it through this, in this order.
local function classify(key, inflight, skip, owned)
  local left = redis.call('PTTL', key)
  if left ~= -2 then return 'cached', left end
  if inflight and redis.call('EXISTS', inflight) == 1 then return 'in-flight' end
  if redis.call('EXISTS', skip) == 1 then return 'skipped' end
  if tonumber(redis.call('ZSCORE', owned, key) or 0) > now then return 'evicted' end
  return 'uncached'
end
