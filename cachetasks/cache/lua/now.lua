-- now: Redis's clock in milliseconds, the one every worker and collect agrees on.
local now
do
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
