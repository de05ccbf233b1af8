-- jobsource atomic append. One call per command; every key is in KEYS and all of them
-- carry the partition's hash tag {p<N>}, so this runs unchanged on Redis Cluster.
--
-- KEYS[1] versions hash   <prefix>:{p<N>}:v:<bucket> field = stream, value = version
-- KEYS[2] stream history  <prefix>:{p<N>}:h:<stream> list of log entry ids (index = version-1)
-- KEYS[3] partition log   <prefix>:{p<N>}:log        stream, one field `event` = envelope JSON
-- KEYS[4] (optional)      <prefix>:{p<N>}:idem:<stream>:<key>
-- ARGV: stream, expected kind (any|none|exact), expected version, fingerprint,
--       retention ms, event count n, mode, then the events:
--       mode 'j': n complete envelopes (the caller knew the versions: none/exact);
--       mode 's': n pairs (envelope head, envelope tail), the version goes between them.
-- Replies (all strings):
--   {'OK', first_version, id...}     appended
--   {'CONFLICT', actual_version}     expected version mismatch, nothing written
--   {'REPLAY', record}               idempotency key seen with the same fingerprint
--   {'IDEM_MISMATCH'}                idempotency key seen with another fingerprint
local stream = ARGV[1]
local kind = ARGV[2]
local n = tonumber(ARGV[6])
local idem = KEYS[4]
if idem then
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
if idem then
  redis.call('SET', idem,
    ARGV[4] .. '\n' .. tostring(current + 1) .. ' ' .. tostring(current + n) .. ' ' .. table.concat(ids, ','),
    'PX', ARGV[5])
end
local reply = {'OK', tostring(current + 1)}
for i = 1, n do reply[i + 2] = ids[i] end
return reply
