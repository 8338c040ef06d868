-- A copy takes the claim on its file for `owner`, unless the file no longer needs it.
-- KEYS: cache key, in-flight mark, skip mark, room mark, OWNED. ARGV: owner, in-flight ms.
-- Returns {state, bytes the file needed when last skipped for lack of room (0: unknown)}:
-- 'claimed' (copy it), or why not: 'cached', 'skipped' (dropping a claim of ours), 'in-flight' (another's).
-- A claim is ours when it is the owner's (a retry) or 'queued' (the collect's, for whoever runs the copy).
--#include now
--#include classify
local mark = redis.call('GET', KEYS[2])
local ours = mark == 'queued' or mark == ARGV[1]
local state = classify(KEYS[1], not ours and KEYS[2], KEYS[3], KEYS[5])
if state == 'cached' or state == 'skipped' then
  if ours then redis.call('DEL', KEYS[2]) end
  return {state, 0}
end
if state == 'in-flight' then return {state, 0} end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return {'claimed', tonumber(redis.call('GET', KEYS[4]) or 0)}
