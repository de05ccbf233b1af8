-- jobsource leases of one partition.
-- KEYS[1] <tag>q:leases (zset stream by deadline ms), KEYS[2] <tag>q:lease (hash
-- stream -> "worker\nmachine\nattempt\nlease_ms").
-- ARGV[1] mode:
--   'renew' stream worker now -> {'OK', deadline} | {'NONE'} | {'NOT_HOLDER'}
--   'due' now limit           -> flat stream, deadline, record ... (deadline <= now)
--   'one' stream              -> {stream, deadline, record} or {}
--   'all'                     -> flat stream, deadline, record ... (every lease)
local mode = ARGV[1]
local function split(s)
  local out = {}
  for part in string.gmatch(s, '([^\n]*)\n?') do out[#out + 1] = part end
  return out
end
if mode == 'renew' then
  local rec = redis.call('HGET', KEYS[2], ARGV[2])
  if not rec then return {'NONE'} end
  local f = split(rec)
  if f[1] ~= ARGV[3] then return {'NOT_HOLDER'} end
  local deadline = tonumber(ARGV[4]) + tonumber(f[4])
  redis.call('ZADD', KEYS[1], 'XX', deadline, ARGV[2])
  return {'OK', string.format('%.0f', deadline)}
end
local out = {}
local function add(s, deadline)
  local rec = redis.call('HGET', KEYS[2], s)
  if rec then
    out[#out + 1] = s
    out[#out + 1] = tostring(deadline)
    out[#out + 1] = rec
  end
end
if mode == 'due' then
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'WITHSCORES', 'LIMIT', 0, ARGV[3])
  for i = 1, #due, 2 do add(due[i], due[i + 1]) end
elseif mode == 'one' then
  local d = redis.call('ZSCORE', KEYS[1], ARGV[2])
  if d then add(ARGV[2], d) end
else
  local all = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
  for i = 1, #all, 2 do add(all[i], all[i + 1]) end
end
return out
