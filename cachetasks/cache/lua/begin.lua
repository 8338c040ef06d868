-- A copy takes the claim on its file for `owner`, unless the file no longer needs it.
-- KEYS: cache key, in-flight mark, skip mark, room mark, OWNED, EVICTED, SOURCES, WANTED.
-- ARGV: owner, in-flight ms.
-- Returns {state, bytes the file needed when last skipped for lack of room (0: unknown),
--          the source of the value to replace ('' if none), the document the copy is for}:
-- 'claimed' (copy it), or why not: 'cached', 'skipped' (dropping a claim of ours), 'in-flight' (another's).
-- A claim is ours when it is the owner's (a retry) or 'queued' (the collect's, for whoever runs the copy).
-- A cached value is copied again only when the collect asked for it (a WANTED entry): it was copied
-- for another document, or it is due for a check of storage's version.
--#include now
--#include classify
local mark = redis.call('GET', KEYS[2])
local ours = mark == 'queued' or mark == ARGV[1]
local state = classify(KEYS[1], not ours and KEYS[2], KEYS[3], KEYS[5], KEYS[6])
local wanted = redis.call('HGET', KEYS[8], KEYS[1])
if state == 'cached' and not (ours and wanted) or state == 'skipped' then
  if ours then redis.call('DEL', KEYS[2]) end
  return {state, 0, '', ''}
end
if state == 'in-flight' then return {state, 0, '', ''} end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
local replacing = ''
if state == 'cached' then replacing = redis.call('HGET', KEYS[7], KEYS[1]) or '' end
return {'claimed', tonumber(redis.call('GET', KEYS[4]) or 0), replacing, wanted or ''}
