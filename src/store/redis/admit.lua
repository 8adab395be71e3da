-- admit: one Store operation (Store::apply) on Redis, atomically. The semantics are those of
-- src/store/kernel.hpp, and the GCRA arithmetic is include/admit/core/rate.hpp's, step for
-- step: every value stays an integer below 2^53, which a Lua double holds exactly; the
-- quotients are corrected so a rounded division can never be off by one.
--
-- KEYS[i]  the state of item i: a string "a b" (rate/adaptive: TAT µs and remainder;
--          window: window end and used), or, for concurrency, a hash lease id -> "amount expiry".
--          Items must be distinct (the Limiter never sends one key and limit twice).
-- ARGV     1 op kind (OpKind: 0 acquire, 1 decide, 2 record, 3 adjust, 4 release, 5 read,
--            6 reset, 7 clamp)
--          2 now in µs; 0 = the server's clock (TIME). Tests pass a time; stores pass 0.
--          3 lease id (decimal string), 4 lease TTL µs, 5 report (1/0)
--          then 13 values per item: kind (0 rate, 1 window, 2 concurrency, 3 adaptive), amount,
--            capacity, a, b, r, tol_us, tol_rem (RateParams), window_end (adjust/release: the
--            lease's window), until (clamp), w_start, w_end, w_next_end (windows: the window
--            around the caller's clock minus a margin, and the end of the one after it)
-- Returns  {all_ok, now, then 7 per item: ok, never, available, retry_after, reset_after,
--          window_end, held}; an error "ADMIT_CLOCK now outside the windows given" when the
--          server's time is outside [w_start, w_next_end) of a window item.
local floor = math.floor

local op = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local lease = ARGV[3]
local lease_expiry = now + tonumber(ARGV[4])
local report = ARGV[5] == '1'
local n = #KEYS

local ACQUIRE, DECIDE, RECORD, ADJUST, RELEASE, READ, RESET, CLAMP = 0, 1, 2, 3, 4, 5, 6, 7
local RATE, WINDOW, CONCURRENCY, ADAPTIVE = 0, 1, 2, 3
local changes = op == ACQUIRE or op == RECORD or op == ADJUST or op == RELEASE or op == CLAMP

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

local function check(p, tu, tr, k)  -- ok, never, retry_after
  if k > p.capacity then return false, true, 0 end
  local bu, br = base(tu, tr)
  local su, sr = span(p, k)
  local nu, nr = add(p, bu, br, su, sr)
  local lu, lr = add(p, now, 0, p.tol_us, p.tol_rem)
  if not less(lu, lr, nu, nr) then return true, false, 0 end
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

-- Items.
local items = {}
local a = 6
for i = 1, n do
  local it = {
    kind = tonumber(ARGV[a]), amount = tonumber(ARGV[a + 1]),
    p = {capacity = tonumber(ARGV[a + 2]), a = tonumber(ARGV[a + 3]), b = tonumber(ARGV[a + 4]),
         r = tonumber(ARGV[a + 5]), tol_us = tonumber(ARGV[a + 6]), tol_rem = tonumber(ARGV[a + 7])},
    window_end = tonumber(ARGV[a + 8]), ['until'] = tonumber(ARGV[a + 9]),
    w_start = tonumber(ARGV[a + 10]), w_end = tonumber(ARGV[a + 11]),
    w_next_end = tonumber(ARGV[a + 12]),
  }
  it.capacity = it.p.capacity
  items[i] = it
  a = a + 13
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

local function read_slot(key)
  local v = redis.call('GET', key)
  if not v then return 0, 0, false end
  local sp = string.find(v, ' ', 1, true)
  return tonumber(string.sub(v, 1, sp - 1)), tonumber(string.sub(v, sp + 1)), true
end

local function read_holds(key)  -- live holds: {lease = {amount, expiry}}, held
  local flat = redis.call('HGETALL', key)
  local holds, held = {}, 0
  for j = 1, #flat, 2 do
    local v = flat[j + 1]
    local sp = string.find(v, ' ', 1, true)
    local amount, expiry = tonumber(string.sub(v, 1, sp - 1)), tonumber(string.sub(v, sp + 1))
    if expiry > now then
      holds[flat[j]] = {amount, expiry}
      held = held + amount
    end
  end
  return holds, held
end

local results = {}
local all_ok = true
local state = {}  -- per item: slot (sa, sb) or holds

-- Pass 1: locate, check, report.
for i = 1, n do
  local it = items[i]
  local r = {ok = true, never = false, available = 0, retry_after = 0, reset_after = 0,
             window_end = 0, held = 0}
  results[i] = r
  if op == RESET then
    redis.call('DEL', KEYS[i])
  elseif it.kind == CONCURRENCY then
    local holds, held = read_holds(KEYS[i])
    state[i] = holds
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
    local sa, sb = read_slot(KEYS[i])
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
    state[i] = {sa, sb}
  end
  all_ok = all_ok and r.ok
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

if not changes or (op == ACQUIRE and not all_ok) then return reply() end

-- Pass 2: apply. Each key expires when its state becomes idle (a full bucket, a finished
-- window, no live holder), so Redis prunes by itself.
local function store_slot(key, sa, sb)
  if sa < now then  -- idle: the same as no state
    redis.call('DEL', key)
    return
  end
  redis.call('SET', key, string.format('%d %d', sa, sb), 'PXAT', floor(sa / 1000) + 1)
end

for i = 1, n do
  local it = items[i]
  local r = results[i]
  local key = KEYS[i]
  if it.kind == CONCURRENCY then
    local holds = state[i]
    local touched = false
    if op == ACQUIRE and it.amount > 0 then
      redis.call('HSET', key, lease, string.format('%d %d', it.amount, lease_expiry))
      holds[lease] = {it.amount, lease_expiry}
      r.held = r.held + it.amount
      touched = true
    elseif op == RELEASE then
      redis.call('HDEL', key, lease)
      holds[lease] = nil
      touched = true
      r.held = 0
      for _, h in pairs(holds) do r.held = r.held + h[1] end
    end
    if touched then
      -- drop expired holders; expire the hash with its last holder
      local flat = redis.call('HGETALL', key)
      local last = 0
      for j = 1, #flat, 2 do
        local v = flat[j + 1]
        local sp = string.find(v, ' ', 1, true)
        local expiry = tonumber(string.sub(v, sp + 1))
        if expiry <= now then
          redis.call('HDEL', key, flat[j])
        elseif expiry > last then
          last = expiry
        end
      end
      if last > 0 then redis.call('PEXPIREAT', key, floor(last / 1000) + 1) end
    end
    r.available = math.max(0, it.capacity - r.held)
  else
    local sa, sb = state[i][1], state[i][2]
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
      elseif delta > 0 then  -- rate::consume
        local bu, br = base(sa, sb)
        local su, sr = span(p, delta)
        sa, sb = add(p, bu, br, su, sr)
      elseif delta < 0 then  -- rate::refund
        local su, sr = span(p, -delta)
        sa, sb = sub(p, sa, sb, su, sr)
        if less(sa, sb, now, 0) then sa, sb = now, 0 end
      end
      store_slot(key, sa, sb)
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
      store_slot(key, sa, sb)
      r.window_end = sa
      r.available = math.max(0, it.capacity - sb)
    end
  end
end
return reply()
