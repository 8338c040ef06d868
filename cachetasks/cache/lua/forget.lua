-- Forget keys this service wrote; with ARGV[1] == 'delete' also delete them. Returns how many.
-- KEYS: SIZES, HELD, OWNED, SOURCES. ARGV: 'delete' or 'keep', then the keys.
--#include drop
local n = 0
local delete = ARGV[1] == 'delete'
for i = 2, #ARGV do
  local k = ARGV[i]
  if redis.call('ZSCORE', KEYS[3], k) then
    drop(k)
    if delete then n = n + redis.call('DEL', k) else n = n + 1 end
  end
end
return n
