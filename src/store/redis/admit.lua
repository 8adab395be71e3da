-- admit: one Store operation (Store::apply) on Redis, atomically. The semantics are those of
-- src/store/kernel.hpp, and the GCRA arithmetic is include/admit/core/rate.hpp's, step for
-- step: every value stays an integer below 2^53, which a Lua double holds exactly; the
-- quotients are corrected so a rounded division can never be off by one.
--
-- KEYS[k]  one hash per (namespace, group, resource, entity) of the op, all limits together:
--          field "s<limit>" = the state (rate/adaptive: TAT µs and remainder; window: window
--          end and used) as two big-endian doubles (struct '>dd', 16 bytes; the decimal
--          "a b" of earlier versions is read too); field "c<limit>" = "last lease amount
--          expiry lease amount expiry ..." (concurrency holders; last = the latest expiry).
--          The first number of a field is the instant it becomes idle (the same as no
--          state). Items must be distinct.
--          In server time a hash expires (PEXPIREAT) 1-2 s after its last live field goes
--          idle (expiry_ms).
--          Last of KEYS when ARGV 6 is not 0 (general ops only): the op's durable lease record,
--          a hash: field "d" = the record's bytes (Op::lease_record), field "x" = its expiry
--          (µs, decimal; it is gone at x). In server time the key expires (PEXPIREAT) a
--          minute after x, as garbage collection only: x decides; in the caller's time it
--          never expires (prune: op 10 with ARGV 3 = 1).
-- ARGV     1 op kind (OpKind: 0 acquire, 1 decide, 2 record, 3 adjust, 4 release, 5 read,
--            6 reset, 7 clamp, 8 extend (concurrency holds of the lease move to the lease
--            expiry; nothing else changes);
--            9: the fast path below, one or more acquires / decides of rate and adaptive
--            items only, applied in order, each all-or-nothing on its own: a group commit,
--            one script run for many ops of one hash slot;
--            10 prune: drop the idle fields of every key, no items; with ARGV 3 = 1 the keys
--            are lease records instead, each deleted if expired)
--          op 9: 2 a JSON array of integers: L, the number of limits, 7 values per limit
--            (its parameters, sent once for every op of the run that names it: capacity, a,
--            b, r, tol_us, tol_rem, RateParams, then shadow 1/0), then per op: flags (0 acquire, 1 decide, +2
--            report), now (µs; 0 = the server's clock: one TIME for the whole run), n items,
--            then 3 values per item: key index (1-based, into KEYS), limit (1-based, into
--            the limit table), amount (>= 0); no two items of an op name the same limit of
--            the same key. 3 .. 2+L: each limit's field ("s" .. limit name)
--          other ops: 2 now in µs; 0 = the server's clock (TIME), and keys then expire by
--            themselves when idle (PEXPIREAT). Tests pass a time (keys never expire then:
--            prune). 3 report (1/0), 4 lease id (decimal string), 5 lease TTL µs (the lease
--            expiry is now + TTL), 6 lease record mode (0 none; 1 an acquire that writes its
--            record (7) if admitted; 2 guarded, adjust / release / extend: the op applies only
--            if the record exists, is not expired and equals 7, else nothing changes and the
--            reply is an error "ADMIT_LEASE <why>"; then adjust replaces its data by 8, extend
--            replaces it and sets its expiry to the lease expiry, release deletes it),
--            7 the lease record, 8 the next record, then 16 values per item: key index, limit
--            name, kind (0 rate, 1 window, 2 concurrency, 3 adaptive), amount, capacity, a,
--            b, r, tol_us, tol_rem (RateParams),
--            window_end (adjust/release: the lease's window), until (clamp), w_start, w_end,
--            w_next_end (windows: the window around the caller's estimate of the server's
--            clock, and the end of the one after it), shadow (1/0)
-- Shadow   an item of a shadow limit (Limit::shadow) is checked and reported like the others
--          but its refusal (ok 0) does not refuse the op (all_ok ignores it); an acquire then
--          leaves it unchanged (no charge, no slot) and applies the others (kernel.hpp).
-- Returns  {all_ok, now, then 7 per item: ok, never, available, retry_after, reset_after,
--          window_end, held}; op 9: an array with one reply per op, in order, each either
--          that array or, when every item is ok and the op does not report, just `now` (an
--          integer); prune: {fields (or records) removed, now}.
--          An error "ADMIT_CLOCK <now>" when the server's time is outside
--          [w_start, w_next_end) of a window item.
local op = tonumber(ARGV[1])
local tonumber, floor, match, byte = tonumber, math.floor, string.match, string.byte
local spack, sunpack = struct.pack, struct.unpack
local now  -- the instant of the op being applied, µs
local FAST = 9

-- A state field's value: the binary form written now, or the decimal "a b" of earlier
-- versions (read, never written). A decimal starts with a digit or '-' (0x2D..0x39); the
-- binary's first byte, the top of an integer-valued double, is 0x00 or at least 0x3F.
local STATE = '>dd'
local function state_of(v)  -- a, b; 0, 0 for no field
  if not v then return 0, 0 end
  local c = byte(v, 1)
  if c and c >= 0x2D and c <= 0x39 then
    local a, b = match(v, '^(%S+) (%S+)')
    return tonumber(a), tonumber(b)
  end
  return sunpack(STATE, v)
end
local function state(a, b) return spack(STATE, a, b) end

-- PEXPIREAT's argument (ms) for a hash whose last live field goes idle at `idle` µs: the
-- next whole second after it, plus one, so a key in use every second or faster is neither
-- deleted nor re-armed on every operation (the fast path skips PEXPIREAT
-- while a field it read shows the expiry already late enough). Monotonic in `idle`.
local function expiry_ms(idle) return (floor(idle / 1000000) + 2) * 1000 end

-- Fast path: op 9, acquires and decides of rate and adaptive items whose (key, field) pairs
-- are distinct within each op, so no item sees another's change, with rate::consume
-- inlined; an op whose reply must report (a denial, or report 1) is finished after the
-- helpers below, from the states recorded here (fast_ops).
-- Each run of items on one key reads only its fields (one HMGET) and writes only the live
-- ones (one HSET); idle fields are left for prune or the hash's expiry (idle is the same as
-- no state). Expiry, in server time: every field of a hash has expiry >= expiry_ms(its first
-- number) (the general path sets the exact maximum over the live fields and deletes the idle
-- ones; this path never lowers it), so a field read shows a lower bound of the expiry;
-- PEXPIREAT runs only when the new expiry is later than that bound, GT (the other fields are
-- untouched), or NX first when no field was read (the hash may be new, without an expiry).
-- The numbers come as one JSON array (one cjson.decode instead of a Lua string and a
-- tonumber per value), the limits' parameters in arrays indexed by the limit (LC[j]...).
local replies, fast_ops = {}, nil  -- fast_ops: {reply index, first item in A, n, now, report,
                                   -- denied items, applied, states}
local A, LF, LC, LA, LB, LR, LTU, LTR, LS  -- op 9's numbers, then its limit table
if op == FAST then
  local call, KEYS, unpack = redis.call, KEYS, unpack
  A = cjson.decode(ARGV[2])
  local nl = A[1]
  LF, LC, LA, LB, LR, LTU, LTR, LS = {}, {}, {}, {}, {}, {}, {}, {}
  for j = 1, nl do
    local a = 2 + 7 * (j - 1)
    LF[j] = ARGV[2 + j]
    LC[j], LA[j], LB[j], LR[j], LTU[j], LTR[j] = A[a], A[a + 1], A[a + 2], A[a + 3], A[a + 4],
                                                 A[a + 5]
    LS[j] = A[a + 6] == 1
  end
  local pos, nargs, nreplies = 2 + 7 * nl, #A, 0
  local server_now
  -- Reused by every op of the run: item x's state as read (SA, SB) and as it would be after
  -- the op (NA, NB); per run of items on one key: its first and last item and the latest
  -- state read (false: no field read), which bounds the hash's expiry from below.
  local fields, set, runs, SA, SB, NA, NB = {}, {}, {}, {}, {}, {}, {}
  while pos <= nargs do
    local flags = A[pos]
    now = A[pos + 1]
    local n, first = A[pos + 2], pos + 3  -- item x: A[first + 3(x-1) ..] = key, limit, amount
    local server_time = now == 0
    if server_time then
      if not server_now then
        local t = call('TIME')
        server_now = tonumber(t[1]) * 1000000 + tonumber(t[2])
      end
      now = server_now
    end
    -- denied[x] = true: item x refused; `refused` counts those of non-shadow limits (the op
    -- is denied), shadow refusals leave their item unchanged (na, nb = sa, sb)
    local nruns, denied, refused = 0, false, false
    local i, a = 1, first
    while i <= n do
      local k = A[a]
      local e, m, b = i, 0, a
      repeat
        m = m + 1
        fields[m] = LF[A[b + 1]]
        e, b = e + 1, b + 3
      until e > n or A[b] ~= k
      local values = call('HMGET', KEYS[k], unpack(fields, 1, m))
      local latest = false
      for x = i, e - 1 do
        local j = A[a + 1]
        local sa, sb = 0, 0  -- no field: 0, 0
        local v = values[x - i + 1]
        if v then
          local c = byte(v, 1)  -- state_of, inlined (a call costs ~2 % of the instructions)
          if c >= 0x2D and c <= 0x39 then sa, sb = state_of(v) else sa, sb = sunpack(STATE, v) end
          if not latest or sa > latest then latest = sa end
        end
        local r = LR[j]
        if sb >= r then sb = r - 1 end  -- rate::normalize
        local amount = A[a + 2]
        local na, nb = sa, sb
        if amount > 0 then  -- check: rate::consume within the tolerance, else denied
          local ok = amount <= LC[j]
          if ok then
            local bu, br = sa, sb  -- rate::base
            if bu < now then bu, br = now, 0 end
            local kbp = amount * LB[j]  -- span: k*a + floor(k*b / r), rem
            local q = kbp / r
            q = q - q % 1  -- floor, exactly, without a call
            local rem = kbp - q * r
            if rem < 0 then
              q, rem = q - 1, rem + r
            elseif rem >= r then
              q, rem = q + 1, rem - r
            end
            local nu, nr = bu + amount * LA[j] + q, br + rem
            if nr >= r then nu, nr = nu + 1, nr - r end
            local lu, lr = now + LTU[j], LTR[j]
            if lr >= r then lu, lr = lu + 1, lr - r end
            ok = not (lu < nu or (lu == nu and lr < nr))
            if ok then na, nb = nu, nr end
          end
          if not ok then
            denied = denied or {}
            denied[x] = true
            if not LS[j] then refused = true end
          end
        end
        SA[x], SB[x], NA[x], NB[x] = sa, sb, na, nb
        a = a + 3
      end
      runs[nruns + 1], runs[nruns + 2], runs[nruns + 3] = i, e - 1, latest
      nruns = nruns + 3
      i = e
    end
    local applied = flags % 2 == 0 and not refused  -- an acquire, all ok (or shadow)
    if applied then
      for r = 1, nruns, 3 do
        local m, last = 0, 0
        local x0 = runs[r]
        local b = first + 3 * (x0 - 1)
        for x = x0, runs[r + 1] do
          local na = NA[x]
          -- live: written (normalized, as the kernel writes it); a refusing shadow item is
          -- left as it is, not even normalized (the kernel does not touch it)
          if na >= now and not (denied and denied[x]) then
            set[m + 1] = LF[A[b + 1]]
            set[m + 2] = spack(STATE, na, NB[x])
            m = m + 2
            if na > last then last = na end
          end
          b = b + 3
        end
        if m > 0 then
          local key = KEYS[A[first + 3 * (x0 - 1)]]
          call('HSET', key, unpack(set, 1, m))
          local latest = runs[r + 2]
          if server_time and (not latest or last > latest) then
            local at = expiry_ms(last)
            if not latest then
              if call('PEXPIREAT', key, at, 'NX') == 0 then call('PEXPIREAT', key, at, 'GT') end
            elseif at > expiry_ms(latest) then
              call('PEXPIREAT', key, at, 'GT')
            end
          end
        end
      end
    end
    nreplies = nreplies + 1
    if denied or flags >= 2 then  -- a denial, or report
      fast_ops = fast_ops or {}
      local states = {}  -- SA... are reused by the next op
      for x = 1, n do
        states[4 * x - 3], states[4 * x - 2], states[4 * x - 1], states[4 * x] =
            SA[x], SB[x], NA[x], NB[x]
      end
      fast_ops[#fast_ops + 1] = {nreplies, first, n, now, flags >= 2, denied, applied, states,
                                 refused}
      replies[nreplies] = false
    else
      replies[nreplies] = now
    end
    pos = first + 3 * n
  end
  if not fast_ops then return replies end
end

-- x = q*y + r with 0 <= r < y, exactly (x >= 0 or x < 0, y > 0).
local function idiv(x, y)
  local q = floor(x / y)
  local r = x - q * y
  if r < 0 then
    q = q - 1
    r = r + y
  elseif r >= y then
    q = q + 1
    r = r - y
  end
  return q, r
end

local function less(xu, xr, yu, yr) return xu < yu or (xu == yu and xr < yr) end

-- n * T as (µs, rem)
local function span(p, k)
  local q, r = idiv(k * p.b, p.r)
  return k * p.a + q, r
end

local function add(p, xu, xr, du, dr)
  xu, xr = xu + du, xr + dr
  if xr >= p.r then return xu + 1, xr - p.r end
  return xu, xr
end

local function sub(p, xu, xr, du, dr)
  xu, xr = xu - du, xr - dr
  if xr < 0 then return xu - 1, xr + p.r end
  return xu, xr
end

local function base(tu, tr)
  if less(tu, tr, now, 0) then return now, 0 end
  return tu, tr
end

-- ok, never, retry_after; ok: then the TAT after consuming k (rate::consume)
local function check(p, tu, tr, k)
  if k > p.capacity then return false, true, 0 end
  local bu, br = base(tu, tr)
  local su, sr = span(p, k)
  local nu, nr = add(p, bu, br, su, sr)
  local lu, lr = add(p, now, 0, p.tol_us, p.tol_rem)
  if not less(lu, lr, nu, nr) then return true, false, 0, nu, nr end
  local xu, xr = sub(p, nu, nr, p.tol_us, p.tol_rem)
  return false, false, xu + (xr > 0 and 1 or 0) - now
end

local function available(p, tu, tr)
  local bu, br = base(tu, tr)
  local lu, lr = add(p, now, 0, p.tol_us, p.tol_rem)
  if less(lu, lr, bu, br) then return 0 end
  local du, dr = sub(p, lu, lr, bu, br)
  if p.r == 1 then return math.min(idiv(du, p.a), p.capacity) end
  -- floor(d / T): estimate in doubles, then correct exactly with span (which is exact).
  local q = floor((du + dr / p.r) / (p.a + p.b / p.r))
  if q > p.capacity then q = p.capacity end
  if q < 0 then q = 0 end
  while q > 0 do
    local su, sr = span(p, q)
    if not less(du, dr, su, sr) then break end
    q = q - 1
  end
  while q < p.capacity do
    local su, sr = span(p, q + 1)
    if less(du, dr, su, sr) then break end
    q = q + 1
  end
  return q
end

local function reset_after(tu, tr)
  if not less(now, 0, tu, tr) then return 0 end
  return tu - now + (tr > 0 and 1 or 0)
end

-- The fast path's ops that report: their full replies, from the states it recorded.
if fast_ops then
  local params = {}  -- params[j]: limit j's RateParams as the helpers take them
  for _, f in ipairs(fast_ops) do
    local slot, first, n, at, report, denied, applied, st, refused = unpack(f, 1, 9)
    now = at
    local out = {refused and 0 or 1, now}
    for x = 1, n do
      local a = first + 3 * (x - 1)
      local j = A[a + 1]
      local p = params[j]
      if not p then
        p = {capacity = LC[j], a = LA[j], b = LB[j], r = LR[j], tol_us = LTU[j],
             tol_rem = LTR[j]}
        params[j] = p
      end
      local d = denied and denied[x]
      local never, retry_after, avail, reset = false, 0, 0, 0
      if d then
        local _
        _, never, retry_after = check(p, st[4 * x - 3], st[4 * x - 2], A[a + 2])
      end
      if report or d then  -- the state after an applied acquire, else the state read
        local y = (applied and not d) and 4 * x - 1 or 4 * x - 3
        avail = available(p, st[y], st[y + 1])
        reset = reset_after(st[y], st[y + 1])
      end
      out[#out + 1] = d and 0 or 1
      out[#out + 1] = never and 1 or 0
      out[#out + 1] = avail
      out[#out + 1] = retry_after
      out[#out + 1] = reset
      out[#out + 1] = 0
      out[#out + 1] = 0
    end
    replies[slot] = out
  end
  return replies
end
-- The general path: every other op.
now = tonumber(ARGV[2])
local server_time = now == 0
if server_time then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local report = ARGV[3] == '1'
local ACQUIRE, DECIDE, RECORD, ADJUST, RELEASE, READ, RESET, CLAMP, EXTEND, PRUNE =
    0, 1, 2, 3, 4, 5, 6, 7, 8, 10

local function consume(p, tu, tr, k)  -- rate::consume
  local bu, br = base(tu, tr)
  local su, sr = span(p, k)
  return add(p, bu, br, su, sr)
end

local lease = ARGV[4]
local lease_expiry = now + tonumber(ARGV[5])
local RATE, WINDOW, CONCURRENCY, ADAPTIVE = 0, 1, 2, 3
local changes = op == ACQUIRE or op == RECORD or op == ADJUST or op == RELEASE or op == CLAMP or
                    op == EXTEND

-- The hashes, read once per key name (HGETALL), changed in memory, written back at the end.
-- Keyed by name: an op may name one key twice, and items may repeat a (key, limit): each
-- then sees the changes of the ones before it, as in the C++ kernel.
local hashes, dirty = {}, {}
local function hash(k)
  local key = KEYS[k]
  local h = hashes[key]
  if h == nil then
    h = {}
    local flat = redis.call('HGETALL', key)
    for j = 1, #flat, 2 do h[flat[j]] = flat[j + 1] end
    hashes[key] = h
  end
  return h
end

local function mark(it, field)
  local key = KEYS[it.k]
  dirty[key] = dirty[key] or {}
  dirty[key][field] = true
end

local function first_number(v)
  local sp = string.find(v, ' ', 1, true)
  return tonumber(sp and string.sub(v, 1, sp - 1) or v)
end

-- Writes back a changed hash: changed fields set, idle fields (of any limit) removed, the
-- key expiring with its last live field. @return fields removed.
local function write_back(key)
  local h = hashes[key]
  local set, del, last = {}, {}, 0
  for f in pairs(dirty[key] or {}) do
    if h[f] == nil then del[#del + 1] = f end
  end
  for f, v in pairs(h) do
    local idle_at, live
    if string.sub(f, 1, 1) == 'c' then  -- holders: "last ..."
      idle_at = first_number(v)
      live = idle_at > now
    else  -- a state
      idle_at = state_of(v)
      live = idle_at >= now
    end
    if live then
      if dirty[key] and dirty[key][f] then
        set[#set + 1] = f
        set[#set + 1] = v
      end
      if idle_at > last then last = idle_at end
    else
      del[#del + 1] = f
    end
  end
  if #set > 0 then redis.call('HSET', key, unpack(set)) end
  if #del > 0 then redis.call('HDEL', key, unpack(del)) end
  if last > 0 and server_time then redis.call('PEXPIREAT', key, expiry_ms(last)) end
  return #del
end

if op == PRUNE then
  local removed = 0
  if ARGV[3] == '1' then  -- lease records: deleted once expired
    for k = 1, #KEYS do
      local x = tonumber(redis.call('HGET', KEYS[k], 'x'))
      if x and x <= now then removed = removed + redis.call('DEL', KEYS[k]) end
    end
    return {removed, now}
  end
  for k = 1, #KEYS do
    hash(k)
    removed = removed + write_back(KEYS[k])
  end
  return {removed, now}
end

-- The lease record (ARGV 6-8): a guarded op checks it before anything else.
local RECORD_WRITE, RECORD_GUARDED = 1, 2
local record_mode = tonumber(ARGV[6])
local record_key = record_mode ~= 0 and KEYS[#KEYS]
if record_mode == RECORD_GUARDED then
  local rec = redis.call('HMGET', record_key, 'x', 'd')
  local x = tonumber(rec[1])
  if not x or x <= now then
    return redis.error_reply('ADMIT_LEASE lease ' .. lease ..
                             ' is not held (ended, expired or never acquired)')
  end
  if rec[2] ~= ARGV[7] then
    return redis.error_reply('ADMIT_LEASE lease ' .. lease .. ' was changed by another process')
  end
end

-- Writes the record `data` expiring at `x` (nil: keeps its expiry).
local function put_record(data, x)
  if x then
    redis.call('HSET', record_key, 'd', data, 'x', string.format('%d', x))
    if server_time then  -- garbage collection only, a minute late: x decides
      redis.call('PEXPIREAT', record_key, (floor(x / 1000) + 60001))
    end
  else
    redis.call('HSET', record_key, 'd', data)
  end
end

-- What an applied op does to the record (kernel.hpp's record_change).
local function change_record()
  if record_mode == RECORD_WRITE then
    put_record(ARGV[7], lease_expiry)
  elseif record_mode == RECORD_GUARDED then
    if op == RELEASE then
      redis.call('DEL', record_key)
    elseif op == EXTEND then
      put_record(ARGV[8], lease_expiry)
    else
      put_record(ARGV[8], nil)
    end
  end
end

-- Items.
local items = {}
local a = 9
local n = (#ARGV - 8) / 16
for i = 1, n do
  local kind = tonumber(ARGV[a + 2])
  local it = {
    k = tonumber(ARGV[a]), name = ARGV[a + 1],
    field = (kind == CONCURRENCY and 'c' or 's') .. ARGV[a + 1],
    kind = kind, amount = tonumber(ARGV[a + 3]),
    p = {capacity = tonumber(ARGV[a + 4]), a = tonumber(ARGV[a + 5]), b = tonumber(ARGV[a + 6]),
         r = tonumber(ARGV[a + 7]), tol_us = tonumber(ARGV[a + 8]),
         tol_rem = tonumber(ARGV[a + 9])},
    window_end = tonumber(ARGV[a + 10]), ['until'] = tonumber(ARGV[a + 11]),
    w_start = tonumber(ARGV[a + 12]), w_end = tonumber(ARGV[a + 13]),
    w_next_end = tonumber(ARGV[a + 14]), shadow = ARGV[a + 15] == '1',
  }
  it.capacity = it.p.capacity
  items[i] = it
  a = a + 16
end

local function checks(it) return (op == ACQUIRE or op == DECIDE) and it.amount > 0 end

-- The end of the window containing now.
local function window_end_now(it)
  if now < it.w_start or now >= it.w_next_end then
    return redis.error_reply('ADMIT_CLOCK now ' .. string.format('%d', now) ..
                             ' outside the windows given')
  end
  if now < it.w_end then return it.w_end end
  return it.w_next_end
end

local function read_slot(it) return state_of(hash(it.k)[it.field]) end  -- a, b

local function read_holds(it)  -- live holds: {lease = {amount, expiry}}, held
  local v = hash(it.k)[it.field]
  local holds, held = {}, 0
  if not v then return holds, held end
  local lease_id, amount
  local j = 0
  for w in string.gmatch(v, '%S+') do
    if j > 0 then
      local m = j % 3
      if m == 1 then
        lease_id = w
      elseif m == 2 then
        amount = tonumber(w)
      else
        local expiry = tonumber(w)
        if expiry > now then
          holds[lease_id] = {amount, expiry}
          held = held + amount
        end
      end
    end
    j = j + 1
  end
  return holds, held
end

local function write_holds(it, holds)
  local parts, last = {}, 0
  for id, h in pairs(holds) do
    if h[2] > now then
      parts[#parts + 1] = id .. ' ' .. string.format('%d %d', h[1], h[2])
      if h[2] > last then last = h[2] end
    end
  end
  local h = hash(it.k)
  if #parts == 0 then
    h[it.field] = nil
  else
    h[it.field] = string.format('%d ', last) .. table.concat(parts, ' ')
  end
  mark(it, it.field)
end

local function write_slot(it, sa, sb)
  hash(it.k)[it.field] = state(sa, sb)
  mark(it, it.field)
end

local results = {}
local all_ok = true

-- Pass 1: locate, check, report.
for i = 1, n do
  local it = items[i]
  local r = {ok = true, never = false, available = 0, retry_after = 0, reset_after = 0,
             window_end = 0, held = 0}
  results[i] = r
  if op == RESET then  -- forget the limit's state, whatever its kind
    local h = hash(it.k)
    h['s' .. it.name], h['c' .. it.name] = nil, nil
    mark(it, 's' .. it.name)
    mark(it, 'c' .. it.name)
  elseif it.kind == CONCURRENCY then
    local holds, held = read_holds(it)
    r.held = held
    if checks(it) then
      if it.amount > it.capacity then
        r.ok, r.never = false, true
      elseif held + it.amount > it.capacity then
        r.ok = false
        local list = {}
        for _, h in pairs(holds) do list[#list + 1] = h end
        table.sort(list, function(x, y) return x[2] < y[2] end)
        local left = held
        for _, h in ipairs(list) do
          left = left - h[1]
          if left + it.amount <= it.capacity then
            r.retry_after = h[2] - now
            break
          end
        end
      end
    end
    r.available = math.max(0, it.capacity - held)
  else
    local sa, sb = read_slot(it)
    if it.kind == RATE or it.kind == ADAPTIVE then
      local p = it.p
      if sb >= p.r then sb = p.r - 1 end  -- rate::normalize
      if checks(it) then
        r.ok, r.never, r.retry_after = check(p, sa, sb, it.amount)
      end
      if report or not r.ok then
        r.available = available(p, sa, sb)
        r.reset_after = reset_after(sa, sb)
      end
    else  -- window
      local wend, used = sa, sb
      if wend <= now then
        wend = window_end_now(it)
        if type(wend) == 'table' then return wend end
        used = 0
      end
      if checks(it) then
        if it.amount > it.capacity then
          r.ok, r.never = false, true
        elseif used + it.amount > it.capacity then
          r.ok, r.retry_after = false, wend - now
        end
      end
      r.window_end = wend
      r.available = math.max(0, it.capacity - used)
      r.reset_after = wend - now
    end
  end
  all_ok = all_ok and (r.ok or it.shadow)
end

local function reply()
  local out = {all_ok and 1 or 0, now}
  for i = 1, n do
    local r = results[i]
    out[#out + 1] = r.ok and 1 or 0
    out[#out + 1] = r.never and 1 or 0
    out[#out + 1] = r.available
    out[#out + 1] = r.retry_after
    out[#out + 1] = r.reset_after
    out[#out + 1] = r.window_end
    out[#out + 1] = r.held
  end
  return out
end

local function finish()
  for key in pairs(dirty) do write_back(key) end
  return reply()
end

if op == RESET then return finish() end
if not changes or (op == ACQUIRE and not all_ok) then return reply() end

-- Pass 2: apply. Each hash expires when its last field becomes idle (a full bucket, a
-- finished window, no live holder), so Redis prunes by itself.
for i = 1, n do
  local it = items[i]
  local r = results[i]
  if not r.ok then  -- an admitted acquire's refusing shadow item: unchanged, reported as read
  elseif it.kind == CONCURRENCY then
    local holds = read_holds(it)  -- with what earlier items of this op changed
    local touched = false
    if op == ACQUIRE and it.amount > 0 then
      local had = holds[lease]
      holds[lease] = {it.amount + (had and had[1] or 0), lease_expiry}
      r.held = r.held + it.amount
      touched = true
    elseif op == RELEASE then
      holds[lease] = nil
      touched = true
      r.held = 0
      for _, h in pairs(holds) do r.held = r.held + h[1] end
    elseif op == EXTEND then  -- holds has live holds only: an expired one stays expired
      local h = holds[lease]
      if h then h[2] = lease_expiry end
      touched = true
      r.held = 0
      for _, x in pairs(holds) do
        if x[2] > now then r.held = r.held + x[1] end
      end
    end
    if touched then write_holds(it, holds) end  -- expired holders dropped
    r.available = math.max(0, it.capacity - r.held)
  elseif op ~= EXTEND then  -- extend changes holds only
    local sa, sb = read_slot(it)  -- with what earlier items of this op changed
    local delta = it.amount
    if op == RELEASE then delta = -delta end
    if it.kind == RATE or it.kind == ADAPTIVE then
      local p = it.p
      if sb >= p.r then sb = p.r - 1 end
      if op == CLAMP then  -- rate::clamp
        local k = math.max(it.amount, 0)
        if k < p.capacity then
          local fu, fr = add(p, now, 0, p.tol_us, p.tol_rem)
          local su, sr = span(p, k)
          fu, fr = sub(p, fu, fr, su, sr)
          if less(sa, sb, fu, fr) then sa, sb = fu, fr end
        end
        if it['until'] > now then
          local fu, fr = add(p, it['until'], 0, p.tol_us, p.tol_rem)
          local su, sr = span(p, 1)
          fu, fr = sub(p, fu, fr, su, sr)
          if less(sa, sb, fu, fr) then sa, sb = fu, fr end
        end
      elseif delta > 0 then
        sa, sb = consume(p, sa, sb, delta)
      elseif delta < 0 then  -- rate::refund
        local su, sr = span(p, -delta)
        sa, sb = sub(p, sa, sb, su, sr)
        if less(sa, sb, now, 0) then sa, sb = now, 0 end
      end
      write_slot(it, sa, sb)
      if report then
        r.available = available(p, sa, sb)
        r.reset_after = reset_after(sa, sb)
      end
    else  -- window
      if sa <= now then sa, sb = r.window_end, 0 end
      local same_window = it.window_end == 0 or it.window_end == sa
      if op == CLAMP then
        local floor_used
        if it['until'] > now then
          floor_used = it.capacity
        else
          floor_used = it.capacity - math.max(it.amount, 0)
        end
        if sb < floor_used then sb = floor_used end
      elseif delta > 0 then
        sb = sb + delta
      elseif delta < 0 and same_window then
        sb = math.max(0, sb + delta)
      end
      write_slot(it, sa, sb)
      r.window_end = sa
      r.available = math.max(0, it.capacity - sb)
    end
  end
end
if record_mode ~= 0 then change_record() end
return finish()
