-- Reads a stream's events by version through its history list (one round trip).
-- KEYS[1] stream history list, KEYS[2] partition log.
-- ARGV[1] first index (version - 1), ARGV[2] last index.
-- Reply: flat list id1, envelope1, id2, envelope2, ... ('' when an entry is missing).
local ids = redis.call('LRANGE', KEYS[1], ARGV[1], ARGV[2])
local out = {}
for _, id in ipairs(ids) do
  local e = redis.call('XRANGE', KEYS[2], id, id)
  local env = ''
  if e[1] then
    local fields = e[1][2]
    for j = 1, #fields, 2 do
      if fields[j] == 'event' then env = fields[j + 1] end
    end
  end
  out[#out + 1] = id
  out[#out + 1] = env
end
return out
