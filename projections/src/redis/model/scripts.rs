//! The Lua scripts that apply a batch atomically with its checkpoint: per event (guarded
//! by the entity hash's `version`) or per folded entity.

/// Applies a whole batch atomically, with the checkpoint: for each event, its operations
/// run only when its version is above the entity hash's `version`.
/// KEYS: every key the batch touches, then the checkpoint hash and the fence hash. ARGV:
/// partition, checkpoint value, lease epoch (`''`: none), then per event: entity key index, version, op count, and per op:
/// name, key index, arg count, args.
pub(super) const BATCH_APPLY: &str = r"
-- The lease epoch (ARGV[3], '' without leases) against the last writer's: a paused
-- former owner's batch is refused whole.
if ARGV[3] ~= '' then
  local f = tonumber(redis.call('HGET', KEYS[#KEYS], ARGV[1]) or '0')
  if tonumber(ARGV[3]) < f then return -1 end
  redis.call('HSET', KEYS[#KEYS], ARGV[1], ARGV[3])
end
local i = 4
local applied = 0
while i <= #ARGV do
  local ek = KEYS[tonumber(ARGV[i])]
  local v = tonumber(ARGV[i + 1])
  local nops = tonumber(ARGV[i + 2])
  i = i + 3
  local apply = tonumber(redis.call('HGET', ek, 'version') or '0') < v
  for _ = 1, nops do
    local op, key, nargs = ARGV[i], KEYS[tonumber(ARGV[i + 1])], tonumber(ARGV[i + 2])
    if apply then
      if op == 'ZADD_BY_PRIORITY' then
        -- back into the pending zset with the priority recorded at submission
        redis.call('ZADD', key, redis.call('HGET', ek, 'priority') or '0', ARGV[i + 3])
      elseif op == 'MACHINE_WORKER' then
        machine_worker(ek, key, ARGV[i + 3], ARGV[i + 4])
      else
        redis.call(op, key, unpack(ARGV, i + 3, i + 2 + nargs))
      end
    end
    i = i + 3 + nargs
  end
  if apply then
    redis.call('HSET', ek, 'version', v)
    applied = applied + 1
  end
end
redis.call('HSET', KEYS[#KEYS - 1], ARGV[1], ARGV[2])
return applied
";

/// Applies a batch folded per entity: each group carries one entity's events of the batch
/// folded into one set of operations, guarded by the entity's version range. A group the
/// entity has fully applied is skipped; a group it has partly applied (a replay that
/// overlaps) is left alone and reported, and the checkpoint is then not moved: the caller
/// applies those groups event by event with [`BATCH_APPLY`], which moves it.
/// KEYS: every key, then the checkpoint hash and the fence hash. ARGV: partition,
/// checkpoint value, lease epoch (`''`: none), then per group: entity key index, first version, last version, op count, ops (as in BATCH_APPLY).
/// Returns the 1-based numbers of the partly applied groups; `{-1}` when fenced.
pub(super) const FOLDED_APPLY: &str = r"
-- The lease epoch (ARGV[3], '' without leases) against the last writer's: a paused
-- former owner's batch is refused whole.
if ARGV[3] ~= '' then
  local f = tonumber(redis.call('HGET', KEYS[#KEYS], ARGV[1]) or '0')
  if tonumber(ARGV[3]) < f then return {-1} end
  redis.call('HSET', KEYS[#KEYS], ARGV[1], ARGV[3])
end
local i = 4
local group = 0
local partial = {}
while i <= #ARGV do
  group = group + 1
  local ek = KEYS[tonumber(ARGV[i])]
  local first, last = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local nops = tonumber(ARGV[i + 3])
  i = i + 4
  local cur = tonumber(redis.call('HGET', ek, 'version') or '0')
  local apply = cur < first
  if not apply and cur < last then partial[#partial + 1] = group end
  for _ = 1, nops do
    local op, key, nargs = ARGV[i], KEYS[tonumber(ARGV[i + 1])], tonumber(ARGV[i + 2])
    if apply then
      if op == 'ZADD_BY_PRIORITY' then
        redis.call('ZADD', key, redis.call('HGET', ek, 'priority') or '0', ARGV[i + 3])
      elseif op == 'MACHINE_WORKER' then
        machine_worker(ek, key, ARGV[i + 3], ARGV[i + 4])
      else
        redis.call(op, key, unpack(ARGV, i + 3, i + 2 + nargs))
      end
    end
    i = i + 3 + nargs
  end
  if apply then redis.call('HSET', ek, 'version', last) end
end
if #partial == 0 then redis.call('HSET', KEYS[#KEYS - 1], ARGV[1], ARGV[2]) end
return partial
";
