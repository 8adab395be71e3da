-- admit's learned state on Redis (RedisStore::put_learned / list_learned; docs/stores.md,
-- "Learned state in Redis"). One hash per namespace, KEYS[1] = "<prefix>:{<ns>}#learned", a
-- field per entry, its value "<version> <rank> <expires_at> <value>": three decimal integers
-- below 2^53 (exact as Lua numbers) and the entry's text.
--
-- ARGV[1] 'put': ARGV[2] the field, ARGV[3] version, ARGV[4] rank, ARGV[5] expires_at,
--   ARGV[6] the value, ARGV[7] now. Merges as merge_learned (src/store/learned.cpp) does: the
--   incoming value replaces a stored one that is absent, expired at now, not an entry, or of
--   lower precedence (version, then rank); on equal precedences the stored value stays, with
--   the later expiry. Returns the field's value afterwards.
-- ARGV[1] 'list': ARGV[2] now. Returns the fields not expired at now as HGETALL does (field,
--   value, ...) and deletes the others (expired, or not an entry).
local h = KEYS[1]
local op = ARGV[1]

if op == 'put' then
  local f = ARGV[2]
  local nv, nr, ne = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
  local now = tonumber(ARGV[7])
  local cur = redis.call('HGET', h, f)
  if cur then
    local v, r, e, at = string.match(cur, '^(%d+) (%d+) (%d+) ()')
    if v then
      local sv, sr, se = tonumber(v), tonumber(r), tonumber(e)
      if se > now and not (nv > sv or (nv == sv and nr > sr)) then
        if nv == sv and nr == sr and ne > se then
          cur = v .. ' ' .. r .. ' ' .. ARGV[5] .. ' ' .. string.sub(cur, at)
          redis.call('HSET', h, f, cur)
        end
        return cur
      end
    end
  end
  local incoming = ARGV[3] .. ' ' .. ARGV[4] .. ' ' .. ARGV[5] .. ' ' .. ARGV[6]
  redis.call('HSET', h, f, incoming)
  return incoming
end

if op == 'list' then
  local now = tonumber(ARGV[2])
  local all = redis.call('HGETALL', h)
  local out = {}
  for i = 1, #all - 1, 2 do
    local e = string.match(all[i + 1], '^%d+ %d+ (%d+) ')
    if e and tonumber(e) > now then
      out[#out + 1] = all[i]
      out[#out + 1] = all[i + 1]
    else
      redis.call('HDEL', h, all[i])
    end
  end
  return out
end

return redis.error_reply('ADMIT_LEARNED unknown op ' .. tostring(op))
