#include "script_codec.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <string_view>

namespace admit::redis_store {

namespace {

int kind_code(LimitKind k) {
  switch (k) {
    case LimitKind::rate:
      return 0;
    case LimitKind::window:
      return 1;
    case LimitKind::concurrency:
      return 2;
    case LimitKind::adaptive:
      return 3;
  }
  return 0;
}

void append_decimal(std::string& s, std::int64_t x) {
  std::array<char, 24> buf;
  const auto r = std::to_chars(buf.data(), buf.data() + buf.size(), x);
  s.append(buf.data(), r.ptr);
}

void append_num(std::vector<std::string>& v, std::int64_t x) {
  append_decimal(v.emplace_back(), x);
}

// Appends `x` and a comma to a JSON array being written.
void append_json(std::string& json, std::int64_t x) {
  append_decimal(json, x);
  json += ',';
}

}  // namespace

void encode_fast(const std::vector<Pending*>& batch, bool server_time,
                 std::vector<std::string>& keys, std::vector<std::string>& argv) {
  argv = {std::to_string(kOpFast), ""};
  std::vector<const Pending::Item*> limits;
  std::vector<std::size_t> which;  // per item of the run, in order: its limit (1-based)
  for (const Pending* p : batch) {
    for (const Pending::Item& it : p->items) {
      std::size_t j = 0;
      while (j < limits.size() && !same_limit(*limits[j], it)) ++j;
      if (j == limits.size()) {
        limits.push_back(&it);
        argv.push_back(it.field);
      }
      which.push_back(j + 1);
    }
  }
  std::string& json = argv[1];
  json.reserve(16 + 48 * limits.size() + 40 * which.size());
  json += '[';
  append_json(json, static_cast<std::int64_t>(limits.size()));
  for (const Pending::Item* it : limits) {
    for (const std::int64_t v :
         {it->capacity, it->params.a, it->params.b, it->params.r, it->params.tol_us,
          it->params.tol_rem, static_cast<std::int64_t>(it->shadow ? 1 : 0)}) {
      append_json(json, v);
    }
  }
  std::size_t w = 0;
  for (const Pending* p : batch) {
    append_json(json, (p->acquire ? 0 : 1) + (p->report ? 2 : 0));
    append_json(json, server_time ? 0 : p->now);
    append_json(json, static_cast<std::int64_t>(p->items.size()));
    for (const Pending::Item& it : p->items) {
      append_json(json, static_cast<std::int64_t>(keys.size() + it.key + 1));
      append_json(json, static_cast<std::int64_t>(which[w++]));
      append_json(json, it.amount);
    }
    keys.insert(keys.end(), p->keys.begin(), p->keys.end());
  }
  json.back() = ']';
}

std::vector<std::string> encode_general(const Op& op, bool server_time, Micros caller_now,
                                        Micros estimate) {
  std::vector<std::string> argv;
  argv.reserve(8 + 16 * op.items.size());
  append_num(argv, static_cast<int>(op.kind));
  append_num(argv, server_time ? 0 : caller_now);
  argv.emplace_back(op.report ? "1" : "0");
  argv.push_back(std::to_string(op.lease_id));
  append_num(argv, std::max<Micros>(0, op.lease_expiry - op.now));
  const RecordMode mode = record_mode(op);
  append_num(argv, static_cast<int>(mode));
  if (mode == RecordMode::none) {
    argv.emplace_back();
    argv.emplace_back();
  } else {
    argv.emplace_back(op.lease_record);
    argv.emplace_back(mode == RecordMode::guarded ? op.lease_record_next : std::string_view());
  }
  for (const OpItem& it : op.items) {
    const Limit& l = *it.limit;
    const RateParams& p = detail::params(it);
    WindowBounds w{};
    Micros next_end = 0;
    if (l.kind() == LimitKind::window) {
      w = l.window_at(estimate);
      next_end = l.window_at(w.end).end;
    }
    append_num(argv, it.key + 1);
    argv.push_back(l.name());
    for (const std::int64_t v :
         {static_cast<std::int64_t>(kind_code(l.kind())), it.amount, l.capacity(), p.a, p.b, p.r,
          p.tol_us, p.tol_rem, it.window_end, it.until, w.start, w.end, next_end,
          static_cast<std::int64_t>(l.shadow() ? 1 : 0)}) {
      append_num(argv, v);
    }
  }
  return argv;
}

std::vector<std::string> encode_prune(Micros when, bool records) {
  return {std::to_string(kOpPrune), std::to_string(when), records ? "1" : "0", "0", "0"};
}

void throw_if_lease_error(const std::string& msg) {
  const auto at = msg.find(kLeaseErrorTag);
  if (at != std::string::npos) throw LeaseNotFound(msg.substr(at + kLeaseErrorTag.size()));
}

Micros clock_error_now(const std::string& msg) {
  constexpr std::string_view kTag = "ADMIT_CLOCK now ";
  const auto at = msg.find(kTag);
  if (at == std::string::npos) return -1;
  Micros v = -1;
  const char* b = msg.data() + at + kTag.size();
  std::from_chars(b, msg.data() + msg.size(), v);
  return v;
}

}  // namespace admit::redis_store
