-- jobsource atomic group append: one call carries one or more append commands (group
-- commit), grouped by partition. Every key is in KEYS and carries its partition's hash tag
-- {p<N>}; on Redis Cluster a call carries one partition only, so it stays in one slot.
--
-- Each command is checked and applied on its own, in order, against the state the commands
-- before it left: a conflict (or replay, or failed precondition) answers only that
-- command and writes nothing for it; the others still apply. The whole call is one
-- script, so Redis runs it atomically: either every applied command of the batch is in
-- the log, or (the call never ran) none is.
--
-- KEYS, per partition group: first its six shared keys
--   partition log   <prefix>:{p<N>}:log        stream, one field `event` = envelope JSON
--   queue index     <prefix>:{p<N>}:q:idx, :q:queues, :q:delayed, :q:leases, :q:lease
--   (the ready queues <prefix>:{p<N>}:q:ready:<queue> are named inside: same tag, same slot)
-- then three keys per command of the group:
--   versions hash   <prefix>:{p<N>}:v:<bucket> field = stream, value = version
--   stream history  <prefix>:{p<N>}:h:<stream> list of log entry ids (index = version-1)
--   idempotency     <prefix>:{p<N>}:idem:<stream>:<key> (only read/written with a fingerprint)
-- ARGV: retention ms, group count, then per group: tag prefix '<prefix>:{p<N>}:', command
--   count, then per command:
--   stream, expected kind (any|none|exact), expected version, fingerprint, event count n,
--   mode, now ms, op count m, then the events:
--     mode 'j': n complete envelopes (the caller knew the versions: none/exact);
--     mode 's': n pairs (envelope head, envelope tail), the version goes between them;
--   then m queue ops of 6 args each (kind, a1..a5):
--     R queue available_at attempt score -   ready (delayed while available_at > now)
--     U - - - - -                            not ready any more
--     L worker machine attempt lease_ms deadline   start a lease
--     N now - - - -                          renew the lease (if any) to now + its length
--     X - - - - -                            end the lease
--     E now attempt force - -                precondition: the lease of attempt is due
-- Reply: one array per command, in call order (all strings):
--   {'OK', first_version, id...}     appended
--   {'CONFLICT', actual_version}     expected version mismatch, nothing written
--   {'REPLAY', record}               idempotency key seen with the same fingerprint
--   {'IDEM_MISMATCH'}                idempotency key seen with another fingerprint
--   {'NOT_DUE'}                      an E precondition failed, nothing written
local retention = ARGV[1]
-- The current group's partition keys (set per group below; `one` reads them).
local log, idx, queues, delayed, leases, lease, tag

local function split(s)
  local out = {}
  for part in string.gmatch(s, '([^\n]*)\n?') do out[#out + 1] = part end
  return out
end

-- Argument j of queue op i of the command whose ops start at ARGV[q].
local function op(q, i, j) return ARGV[q + (i - 1) * 6 + j] end

-- Takes `stream` out of the ready queues (if it is in one).
local function unready(stream)
  local rec = redis.call('HGET', idx, stream)
  if rec then
    local f = split(rec)
    redis.call('ZREM', tag .. 'q:ready:' .. f[1], stream)
    redis.call('ZREM', delayed, stream)
    redis.call('HDEL', idx, stream)
  end
end

-- Applies the command whose arguments start at ARGV[a] and whose queue ops start at
-- ARGV[q]; returns its reply. (No closures per command: Lua allocates one per creation.)
local function one(vk, hk, ik, a, q)
  local stream, kind, fp = ARGV[a], ARGV[a + 1], ARGV[a + 3]
  local n, mode = tonumber(ARGV[a + 4]), ARGV[a + 5]
  local now, m = tonumber(ARGV[a + 6]), tonumber(ARGV[a + 7])
  local e = a + 8
  local has_idem = fp ~= ''
  if has_idem then
    local prev = redis.call('GET', ik)
    if prev then
      local nl = string.find(prev, '\n', 1, true)
      if string.sub(prev, 1, nl - 1) ~= fp then
        return {'IDEM_MISMATCH'}
      end
      return {'REPLAY', string.sub(prev, nl + 1)}
    end
  end
  local current = tonumber(redis.call('HGET', vk, stream) or '0')
  if (kind == 'none' and current ~= 0) or (kind == 'exact' and current ~= tonumber(ARGV[a + 2])) then
    return {'CONFLICT', tostring(current)}
  end
  for i = 1, m do
    if op(q, i, 0) == 'E' then
      local rec = redis.call('HGET', lease, stream)
      if not rec then return {'NOT_DUE'} end
      local f = split(rec)
      if f[3] ~= op(q, i, 2) then return {'NOT_DUE'} end
      if op(q, i, 3) ~= '1' then
        local deadline = tonumber(redis.call('ZSCORE', leases, stream) or '0')
        if deadline > tonumber(op(q, i, 1)) then return {'NOT_DUE'} end
      end
    end
  end
  local reply = {'OK', tostring(current + 1)}
  if mode == 'j' then
    for i = 1, n do
      reply[i + 2] = redis.call('XADD', log, '*', 'event', ARGV[e + i - 1])
    end
  else
    for i = 1, n do
      local env = ARGV[e + 2 * (i - 1)] .. tostring(current + i) .. ARGV[e + 2 * i - 1]
      reply[i + 2] = redis.call('XADD', log, '*', 'event', env)
    end
  end
  redis.call('RPUSH', hk, unpack(reply, 3))
  redis.call('HSET', vk, stream, tostring(current + n))
  if has_idem then
    redis.call('SET', ik,
      fp .. '\n' .. tostring(current + 1) .. ' ' .. tostring(current + n) .. ' ' .. table.concat(reply, ',', 3),
      'PX', retention)
  end
  for i = 1, m do
    local k = op(q, i, 0)
    if k == 'R' then
      unready(stream)
      local queue, at = op(q, i, 1), tonumber(op(q, i, 2))
      redis.call('HSET', idx, stream,
        queue .. '\n' .. vk .. '\n' .. tostring(current + n) .. '\n' .. op(q, i, 3) .. '\n' .. op(q, i, 4))
      if at > now then
        redis.call('ZADD', delayed, at, stream)
      else
        redis.call('ZADD', tag .. 'q:ready:' .. queue, op(q, i, 4), stream)
        redis.call('SADD', queues, queue)
      end
    elseif k == 'U' then
      unready(stream)
    elseif k == 'L' then
      redis.call('ZADD', leases, op(q, i, 5), stream)
      redis.call('HSET', lease, stream, op(q, i, 1) .. '\n' .. op(q, i, 2) .. '\n' .. op(q, i, 3) .. '\n' .. op(q, i, 4))
    elseif k == 'N' then
      local rec = redis.call('HGET', lease, stream)
      if rec then
        local f = split(rec)
        redis.call('ZADD', leases, 'XX', string.format('%.0f', tonumber(op(q, i, 1)) + tonumber(f[4])), stream)
      end
    elseif k == 'X' or k == 'E' then
      redis.call('ZREM', leases, stream)
      redis.call('HDEL', lease, stream)
    end
  end
  return reply
end

local replies = {}
local a = 3
local k = 0
for _ = 1, tonumber(ARGV[2]) do
  tag = ARGV[a]
  local count = tonumber(ARGV[a + 1])
  a = a + 2
  log, idx, queues, delayed, leases, lease = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], KEYS[k + 5], KEYS[k + 6]
  k = k + 6
  for _ = 1, count do
    local n, m = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 7])
    local q = a + 8 + n
    if ARGV[a + 5] ~= 'j' then q = q + n end
    replies[#replies + 1] = one(KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], a, q)
    k = k + 3
    a = q + 6 * m
  end
end
return replies
