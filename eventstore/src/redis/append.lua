-- jobsource atomic append. One call per command; every key is in KEYS and all of them
-- carry the partition's hash tag {p<N>}, so this runs unchanged on Redis Cluster.
--
-- KEYS[1] versions hash   <prefix>:{p<N>}:v:<bucket> field = stream, value = version
-- KEYS[2] stream history  <prefix>:{p<N>}:h:<stream> list of log entry ids (index = version-1)
-- KEYS[3] partition log   <prefix>:{p<N>}:log        stream, one field `event` = envelope JSON
-- KEYS[4] idempotency     <prefix>:{p<N>}:idem:<stream>:<key> (only read/written when ARGV[4] ~= '')
-- KEYS[5..9] queue index  <prefix>:{p<N>}:q:idx, :q:queues, :q:delayed, :q:leases, :q:lease
--   (the ready queues <prefix>:{p<N>}:q:ready:<queue> are named inside: same tag, same slot)
-- ARGV: stream, expected kind (any|none|exact), expected version, fingerprint,
--       retention ms, event count n, mode, then the events:
--       mode 'j': n complete envelopes (the caller knew the versions: none/exact);
--       mode 's': n pairs (envelope head, envelope tail), the version goes between them;
--       then: tag prefix '<prefix>:{p<N>}:', now ms, op count m, and m queue ops of 6 args
--       each (kind, a1..a5):
--         R queue available_at attempt score -   ready (delayed while available_at > now)
--         U - - - - -                            not ready any more
--         L worker machine attempt lease_ms deadline   start a lease
--         N now - - - -                          renew the lease (if any) to now + its length
--         X - - - - -                            end the lease
--         E now attempt force - -                precondition: the lease of attempt is due
-- Replies (all strings):
--   {'OK', first_version, id...}     appended
--   {'CONFLICT', actual_version}     expected version mismatch, nothing written
--   {'REPLAY', record}               idempotency key seen with the same fingerprint
--   {'IDEM_MISMATCH'}                idempotency key seen with another fingerprint
--   {'NOT_DUE'}                      an E precondition failed, nothing written
local stream = ARGV[1]
local kind = ARGV[2]
local n = tonumber(ARGV[6])
local has_idem = ARGV[4] ~= ''
local idem = KEYS[4]
if has_idem then
  local prev = redis.call('GET', idem)
  if prev then
    local nl = string.find(prev, '\n', 1, true)
    if string.sub(prev, 1, nl - 1) ~= ARGV[4] then
      return {'IDEM_MISMATCH'}
    end
    return {'REPLAY', string.sub(prev, nl + 1)}
  end
end
local current = tonumber(redis.call('HGET', KEYS[1], stream) or '0')
if (kind == 'none' and current ~= 0) or (kind == 'exact' and current ~= tonumber(ARGV[3])) then
  return {'CONFLICT', tostring(current)}
end
local q = 8 + n
if ARGV[7] ~= 'j' then q = 8 + 2 * n end
local tag = ARGV[q]
local now = tonumber(ARGV[q + 1])
local m = tonumber(ARGV[q + 2] or '0')
local function op(i, j) return ARGV[q + 3 + (i - 1) * 6 + j] end
local function split(s)
  local out = {}
  for part in string.gmatch(s, '([^\n]*)\n?') do out[#out + 1] = part end
  return out
end
for i = 1, m do
  if op(i, 0) == 'E' then
    local rec = redis.call('HGET', KEYS[9], stream)
    if not rec then return {'NOT_DUE'} end
    local f = split(rec)
    if f[3] ~= op(i, 2) then return {'NOT_DUE'} end
    if op(i, 3) ~= '1' then
      local deadline = tonumber(redis.call('ZSCORE', KEYS[8], stream) or '0')
      if deadline > tonumber(op(i, 1)) then return {'NOT_DUE'} end
    end
  end
end
local ids = {}
if ARGV[7] == 'j' then
  for i = 1, n do
    ids[i] = redis.call('XADD', KEYS[3], '*', 'event', ARGV[7 + i])
  end
else
  for i = 1, n do
    local env = ARGV[6 + 2 * i] .. tostring(current + i) .. ARGV[7 + 2 * i]
    ids[i] = redis.call('XADD', KEYS[3], '*', 'event', env)
  end
end
redis.call('RPUSH', KEYS[2], unpack(ids))
redis.call('HSET', KEYS[1], stream, tostring(current + n))
if has_idem then
  redis.call('SET', idem,
    ARGV[4] .. '\n' .. tostring(current + 1) .. ' ' .. tostring(current + n) .. ' ' .. table.concat(ids, ','),
    'PX', ARGV[5])
end
local function unready()
  local rec = redis.call('HGET', KEYS[5], stream)
  if rec then
    local f = split(rec)
    redis.call('ZREM', tag .. 'q:ready:' .. f[1], stream)
    redis.call('ZREM', KEYS[7], stream)
    redis.call('HDEL', KEYS[5], stream)
  end
end
for i = 1, m do
  local k = op(i, 0)
  if k == 'R' then
    unready()
    local queue, at = op(i, 1), tonumber(op(i, 2))
    redis.call('HSET', KEYS[5], stream,
      queue .. '\n' .. KEYS[1] .. '\n' .. tostring(current + n) .. '\n' .. op(i, 3) .. '\n' .. op(i, 4))
    if at > now then
      redis.call('ZADD', KEYS[7], at, stream)
    else
      redis.call('ZADD', tag .. 'q:ready:' .. queue, op(i, 4), stream)
      redis.call('SADD', KEYS[6], queue)
    end
  elseif k == 'U' then
    unready()
  elseif k == 'L' then
    redis.call('ZADD', KEYS[8], op(i, 5), stream)
    redis.call('HSET', KEYS[9], stream, op(i, 1) .. '\n' .. op(i, 2) .. '\n' .. op(i, 3) .. '\n' .. op(i, 4))
  elseif k == 'N' then
    local rec = redis.call('HGET', KEYS[9], stream)
    if rec then
      local f = split(rec)
      redis.call('ZADD', KEYS[8], 'XX', string.format('%.0f', tonumber(op(i, 1)) + tonumber(f[4])), stream)
    end
  elseif k == 'X' or k == 'E' then
    redis.call('ZREM', KEYS[8], stream)
    redis.call('HDEL', KEYS[9], stream)
  end
end
local reply = {'OK', tostring(current + 1)}
for i = 1, n do reply[i + 2] = ids[i] end
return reply
