-- jobsource claim: the best ready job of one partition that the worker can run, assigned
-- in the same atomic call (BullMQ's moveToActive, with the assignment as an event).
--
-- KEYS[1] <tag>q:queues   set of queue names that may have ready entries
-- KEYS[2] <tag>q:idx      hash stream -> "queue\nversions key\nversion\nattempt\nscore"
-- KEYS[3] <tag>q:delayed  zset stream by available_at ms
-- KEYS[4] <tag>log        the partition log
-- KEYS[5] <tag>q:leases   zset stream by lease deadline ms
-- KEYS[6] <tag>q:lease    hash stream -> "worker\nmachine\nattempt\nlease_ms"
-- (the ready queues <tag>q:ready:<queue>, the picked stream's history <tag>h:<stream> and
--  its versions hash, recorded in idx, are named inside: all carry the tag, one slot)
-- ARGV: tag, now ms, worker, machine, lease ms, worker gpu ('' = none), template
--       (\1 = job uuid, \2 = version, \3 = attempt), then the worker's capabilities.
-- Reply: {'NONE'} or {'OK', stream, id1, env1, id2, env2, ...} (the whole history).
local tag, now = ARGV[1], tonumber(ARGV[2])
local gpu = tonumber(ARGV[6])
local caps = {}
for i = 8, #ARGV do caps[ARGV[i]] = true end
local function split(s)
  local out = {}
  for part in string.gmatch(s, '([^\n]*)\n?') do out[#out + 1] = part end
  return out
end
-- Due delayed entries become ready.
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[2], 'LIMIT', 0, 256)
for _, s in ipairs(due) do
  local rec = redis.call('HGET', KEYS[2], s)
  if rec then
    local f = split(rec)
    redis.call('ZADD', tag .. 'q:ready:' .. f[1], f[5], s)
    redis.call('SADD', KEYS[1], f[1])
  end
  redis.call('ZREM', KEYS[3], s)
end
local function fits(queue)
  local bar = string.find(queue, '|', 1, true)
  local need_caps, need_gpu = string.sub(queue, 1, bar - 1), string.sub(queue, bar + 1)
  for c in string.gmatch(need_caps, '[^,]+') do
    if not caps[c] then return false end
  end
  if need_gpu ~= '' then
    if not gpu or tonumber(need_gpu) > gpu then return false end
  end
  return true
end
for _ = 1, 32 do
  local best_key, best_member, best_score
  for _, queue in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    if fits(queue) then
      local key = tag .. 'q:ready:' .. queue
      local head = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
      if head[1] == nil then
        redis.call('SREM', KEYS[1], queue)
      else
        local score = tonumber(head[2])
        if best_score == nil or score < best_score or (score == best_score and head[1] < best_member) then
          best_key, best_member, best_score = key, head[1], score
        end
      end
    end
  end
  if best_key == nil then return {'NONE'} end
  local s = best_member
  redis.call('ZREM', best_key, s)
  local rec = redis.call('HGET', KEYS[2], s)
  redis.call('HDEL', KEYS[2], s)
  if rec then
    local f = split(rec)
    local vkey, version, attempt = f[2], tonumber(f[3]), f[4]
    local current = tonumber(redis.call('HGET', vkey, s) or '0')
    -- The version check: the entry is only claimable at the version it became ready at.
    if current == version then
      local uuid = string.sub(s, 5)
      local env = string.gsub(ARGV[7], '[\1\2\3]', function(c)
        if c == '\1' then return uuid elseif c == '\2' then return tostring(version + 1) else return attempt end
      end)
      local id = redis.call('XADD', KEYS[4], '*', 'event', env)
      local hist = tag .. 'h:' .. s
      redis.call('RPUSH', hist, id)
      redis.call('HSET', vkey, s, tostring(version + 1))
      local lease_ms = tonumber(ARGV[5])
      redis.call('ZADD', KEYS[5], string.format('%.0f', now + lease_ms), s)
      redis.call('HSET', KEYS[6], s, ARGV[3] .. '\n' .. ARGV[4] .. '\n' .. attempt .. '\n' .. ARGV[5])
      local out = {'OK', s}
      for _, hid in ipairs(redis.call('LRANGE', hist, 0, -1)) do
        local e = redis.call('XRANGE', KEYS[4], hid, hid)
        local body = ''
        if e[1] then
          local fields = e[1][2]
          for j = 1, #fields, 2 do
            if fields[j] == 'event' then body = fields[j + 1] end
          end
        end
        out[#out + 1] = hid
        out[#out + 1] = body
      end
      return out
    end
  end
end
return {'NONE'}
