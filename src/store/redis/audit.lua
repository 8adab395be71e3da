-- admit's audit log on Redis (RedisStore::append_audit / read_audit; docs/stores.md, "The audit
-- log in Redis"). One stream per namespace, KEYS[1] = "<prefix>:{<ns>}#audit", and its id
-- counter KEYS[2] = "<prefix>:{<ns>}#audit:seq" (one hash slot: the namespace's). An event's id
-- n is its entry's id "n-0"; the counter gives it (INCR) in the same script run as the XADD, so
-- ids increase in append order across every process on the server or cluster. Fields: t (time,
-- µs, decimal), p (principal), a (action), e (entity), r (resource), b (before), f (after).
--
-- ARGV[1] 'append': ARGV[2] the retention (XADD MAXLEN, exact), ARGV[3..9] t p a e r b f.
--   Returns the id.
-- ARGV[1] 'read': ARGV[2] the first entry id (inclusive; '(' + id: exclusive), ARGV[3] the last
--   ('+' none), ARGV[4] at most this many entries, ARGV[5] the entity and ARGV[6] the resource
--   they must have ('' any), ARGV[7] '1' newest first. Returns the entries, as XRANGE does.
local stream, seq = KEYS[1], KEYS[2]
local op = ARGV[1]

if op == 'append' then
  local function add(id)
    return redis.pcall('XADD', stream, 'MAXLEN', ARGV[2], string.format('%d', id) .. '-0',
                       't', ARGV[3], 'p', ARGV[4], 'a', ARGV[5], 'e', ARGV[6], 'r', ARGV[7],
                       'b', ARGV[8], 'f', ARGV[9])
  end
  local function check(id)
    -- Lua numbers are doubles: ids stay below 2^53.
    if id >= 9007199254740992 then
      return redis.error_reply('ADMIT_AUDIT id ' .. string.format('%.0f', id) .. ' too large')
    end
    return nil
  end
  local id = redis.call('INCR', seq)
  local bad = check(id)
  if bad then return bad end
  local r = add(id)
  if type(r) == 'table' and r.err then
    -- The counter is behind the stream (it was deleted, evicted or set by hand): go on after
    -- the stream's last id, once.
    if not string.find(r.err, 'equal or smaller', 1, true) then return r end
    local info = redis.call('XINFO', 'STREAM', stream)
    local last = nil
    for i = 1, #info - 1, 2 do
      if info[i] == 'last-generated-id' then last = string.match(info[i + 1], '^(%d+)%-') end
    end
    if last == nil then return r end
    redis.call('SET', seq, last)
    id = redis.call('INCR', seq)
    bad = check(id)
    if bad then return bad end
    r = add(id)
    if type(r) == 'table' and r.err then return r end
  end
  return id
end

if op == 'read' then
  local lo, hi = ARGV[2], ARGV[3]
  local limit = tonumber(ARGV[4])
  local entity, resource = ARGV[5], ARGV[6]
  local newest_first = ARGV[7] == '1'
  local filtered = entity ~= '' or resource ~= ''
  -- Filtered reads page through the stream in steps of at least 100 entries.
  local count = limit
  if filtered and count < 100 then count = 100 end
  local out = {}
  while true do
    local page
    if newest_first then
      page = redis.call('XREVRANGE', stream, hi, lo, 'COUNT', count)
    else
      page = redis.call('XRANGE', stream, lo, hi, 'COUNT', count)
    end
    for i = 1, #page do
      local entry = page[i]
      local keep = true
      if filtered then
        -- As the store reads an entry: a field given twice counts as its last value.
        local fields, e, r = entry[2], '', ''
        for j = 1, #fields - 1, 2 do
          if fields[j] == 'e' then
            e = fields[j + 1]
          elseif fields[j] == 'r' then
            r = fields[j + 1]
          end
        end
        keep = (entity == '' or e == entity) and (resource == '' or r == resource)
      end
      if keep then
        out[#out + 1] = entry
        if #out == limit then return out end
      end
    end
    if #page < count then return out end
    if newest_first then
      hi = '(' .. page[#page][1]
    else
      lo = '(' .. page[#page][1]
    end
  end
end

return redis.error_reply('ADMIT_AUDIT unknown op ' .. tostring(op))
