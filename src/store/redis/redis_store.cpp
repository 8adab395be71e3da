#include "admit/store/redis_store.hpp"

#include <absl/container/flat_hash_map.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <semaphore>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "admit/core/error.hpp"
#include "admit_lua.hpp"
#include "../kernel.hpp"

namespace admit {

namespace {

// The script's own ops (not OpKinds): drop idle fields; acquires and decides on its fast
// path, one or many (group commit).
constexpr int kOpPrune = 8;
constexpr int kOpFast = 9;
// Group commit: at most this many ops per script run, and this many runs in flight per lane
// (one hash slot; standalone: the server) before ops queue for the next run.
constexpr std::size_t kMaxBatchOps = 64;
constexpr int kBatchesInFlight = 2;
constexpr Micros kWindowMargin = kMicrosPerSecond;  // clock estimate slack for window bounds
constexpr int kClockRetries = 2;
constexpr std::size_t kScanCount = 1000;

int kind_code(LimitKind k) {
  switch (k) {
    case LimitKind::rate: return 0;
    case LimitKind::window: return 1;
    case LimitKind::concurrency: return 2;
    case LimitKind::adaptive: return 3;
  }
  return 0;
}

bool safe_byte(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '.' || c == '_' || c == '~' || c == '@' || c == '/' || c == '+' || c == '=' ||
         c == '-';
}

// Percent-encodes every byte outside [A-Za-z0-9._~@/+=-]: the result has no ':', '{', '}'
// or glob character, so parts joined by ':' stay apart and SCAN patterns match literally.
void encode_part(std::string& out, std::string_view part) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (const char ch : part) {
    const auto c = static_cast<unsigned char>(ch);
    if (safe_byte(c)) {
      out += ch;
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
}

// Whether the script's fast path runs `op`: an acquire or decide of rate and adaptive items
// only, none of a negative amount (an acquire would refund it), no two of them on one limit
// of one hash (`keys`: the op's Redis keys).
bool fast_path(const Op& op, const std::vector<std::string>& keys) {
  if (op.kind != OpKind::acquire && op.kind != OpKind::decide) return false;
  for (std::size_t i = 0; i < op.items.size(); ++i) {
    const OpItem& it = op.items[i];
    if (!detail::is_rate(it.limit->kind()) || it.amount < 0) return false;
    for (std::size_t j = 0; j < i; ++j) {
      const OpItem& other = op.items[j];
      if (other.limit->name() == it.limit->name() &&
          (other.key == it.key || keys[other.key] == keys[it.key])) {
        return false;
      }
    }
  }
  return true;
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

// The server's clock in an "ADMIT_CLOCK now <µs> ..." error, or -1.
Micros clock_error_now(const std::string& msg) {
  constexpr std::string_view kTag = "ADMIT_CLOCK now ";
  const auto at = msg.find(kTag);
  if (at == std::string::npos) return -1;
  Micros v = -1;
  const char* b = msg.data() + at + kTag.size();
  std::from_chars(b, msg.data() + msg.size(), v);
  return v;
}

// One denial cached: acquiring >= min_amount of this limit fails until `until` (caller clock).
struct Denial {
  std::int64_t min_amount = 0;
  Micros until = 0;
  std::int64_t available = 0;
  Micros reset_at = 0;
  RateParams params;  // the limit as it was: another configuration does not match
  std::int64_t capacity = 0;
};

bool same_limit(const Denial& d, const OpItem& it) {
  return d.capacity == it.limit->capacity() && d.params == detail::params(it);
}

// The local over-limit cache (RedisStoreOptions::deny_cache), sharded by key.
class DenyCache {
 public:
  explicit DenyCache(std::size_t max_entries) : max_per_shard_(std::max<std::size_t>(max_entries / kShards, 1)) {}

  bool empty() const { return size_.load(std::memory_order_relaxed) == 0; }

  std::optional<Denial> find(const std::string& key) {
    Shard& s = shard(key);
    std::lock_guard g(s.mu);
    const auto it = s.map.find(key);
    if (it == s.map.end()) return std::nullopt;
    return it->second;
  }
  void put(const std::string& key, const Denial& d) {
    Shard& s = shard(key);
    std::lock_guard g(s.mu);
    if (s.map.size() >= max_per_shard_) {
      size_.fetch_sub(s.map.size(), std::memory_order_relaxed);
      s.map.clear();
    }
    if (s.map.insert_or_assign(key, d).second) size_.fetch_add(1, std::memory_order_relaxed);
  }
  void erase(const std::string& key) {
    Shard& s = shard(key);
    std::lock_guard g(s.mu);
    if (s.map.erase(key) > 0) size_.fetch_sub(1, std::memory_order_relaxed);
  }
  void clear() {
    for (Shard& s : shards_) {
      std::lock_guard g(s.mu);
      size_.fetch_sub(s.map.size(), std::memory_order_relaxed);
      s.map.clear();
    }
  }

 private:
  static constexpr std::size_t kShards = 16;
  struct Shard {
    std::mutex mu;
    absl::flat_hash_map<std::string, Denial> map;
  };
  Shard& shard(const std::string& key) {
    return shards_[absl::Hash<std::string>{}(key) % kShards];
  }
  std::array<Shard, kShards> shards_;
  std::size_t max_per_shard_;
  std::atomic<std::size_t> size_{0};
};

// One fast-path op (see fast_path) on its way to the server in a script run (op 9): what the
// script needs of it, what its reply is read into, and how its caller learns the outcome.
// It owns all of that: an asynchronous caller's Op is gone once apply_async returns.
class Pending {
 public:
  struct Item {
    std::uint16_t key = 0;  // into keys
    std::string field;      // "s" + limit name
    std::int64_t amount = 0;
    std::int64_t capacity = 0;
    RateParams params;
  };
  std::vector<std::string> keys;  // the op's Redis keys
  std::vector<Item> items;
  bool acquire = true;            // else decide
  bool report = false;
  Micros now = 0;                 // the caller's clock
  std::span<ItemResult> results;  // filled when answered, unless error
  bool ok = false;
  std::exception_ptr error;       // the run failed (or its reply made no sense)
  Store::ApplyCallback done;      // set: asynchronous, heap-allocated, deleted by answer()

  // Blocks until answer() (synchronous callers). A semaphore, not a condition variable: at
  // 64 threads its short spin before sleeping gave ~15 % more acquires/s in
  // bench/redis_bench.cpp.
  void wait() { answered.acquire(); }
  // Wakes wait(), or hands the outcome to `done` and deletes this. Either way the Pending
  // may be gone once it returns.
  void answer() {
    if (!done) {
      answered.release();
      return;
    }
    const Store::ApplyCallback cb = std::move(done);
    const bool result = ok;
    const std::exception_ptr e = std::move(error);
    delete this;
    cb(result, e);
  }

 private:
  std::binary_semaphore answered{0};
};

bool same_limit(const Pending::Item& x, const Pending::Item& y) {
  return x.field == y.field && x.capacity == y.capacity && x.params == y.params;
}

RedisStoreOptions validated(RedisStoreOptions o) {
  if (o.prefix.empty()) throw ValidationError("prefix", o.prefix, "must not be empty");
  for (const char c : o.prefix) {
    if (c == '{' || c == '}' || c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') {
      throw ValidationError("prefix", o.prefix, "must not contain '{', '}' or glob characters");
    }
  }
  return o;
}

}  // namespace

struct RedisStore::Impl {
  RedisStoreOptions o;
  // Group commit: per lane (cluster: a hash slot; standalone: 0, the one server), the script
  // runs in flight and the fast-path ops waiting for the next one. Declared before the
  // client, which may still run callbacks while it is destroyed.
  struct Lane {
    int in_flight = 0;
    std::deque<Pending*> queue;
  };
  std::mutex lanes_mu;
  absl::flat_hash_map<std::uint16_t, Lane> lanes;  // at most 16384 (one per slot)
  redis::Client client;
  redis::Script script{redis::detail::kAdmitLua};
  std::atomic<Micros> offset{0};  // server clock minus caller clock, as last seen
  std::atomic<std::uint64_t> scripts{0}, local_denials{0}, clock_retries{0};
  DenyCache denials;
  std::mutex ns_mu;
  std::vector<std::string> namespaces;  // index = id - 1

  explicit Impl(RedisStoreOptions opts)
      : o(validated(std::move(opts))), client(o.client), denials(o.deny_cache_entries) {}

  static std::string cache_key(const std::string& redis_key, std::string_view limit) {
    std::string k = redis_key;
    k += '\0';
    k += limit;
    return k;
  }

  // Answers an acquire/decide from the deny cache when one of its items is known denied.
  bool answer_locally(const Op& op, const std::vector<std::string>& keys,
                      std::span<ItemResult> results) {
    bool denied = false;
    for (std::size_t i = 0; i < op.items.size(); ++i) {
      const OpItem& it = op.items[i];
      results[i] = ItemResult{};
      if (it.amount <= 0 || it.limit->kind() == LimitKind::concurrency) continue;
      const auto d = denials.find(cache_key(keys[it.key], it.limit->name()));
      if (!d || d->until <= op.now || it.amount < d->min_amount || !same_limit(*d, it)) continue;
      ItemResult& r = results[i];
      r.ok = false;
      r.retry_after = d->until - op.now;
      r.available = d->available;
      r.reset_after = std::max<Micros>(0, d->reset_at - op.now);
      denied = true;
    }
    if (denied) local_denials.fetch_add(1, std::memory_order_relaxed);
    return denied;
  }

  // Caches the denial in `r` (of `amount` units of a rate-like limit at the caller's `now`).
  void remember(const std::string& redis_key, std::string_view limit, std::int64_t amount,
                Micros now, const RateParams& params, std::int64_t capacity,
                const ItemResult& r) {
    if (r.ok || r.never || r.retry_after <= 0) return;
    denials.put(cache_key(redis_key, limit),
                Denial{amount, now + r.retry_after, r.available, now + r.reset_after, params,
                       capacity});
  }

  void forget_denials(const Op& op, const std::vector<std::string>& keys) {
    for (const OpItem& it : op.items) denials.erase(cache_key(keys[it.key], it.limit->name()));
  }

  // The op's Redis keys, in Op::keys order.
  std::vector<std::string> keys_of(const Op& op, const RedisStore& self) const {
    std::vector<std::string> keys;
    keys.reserve(op.keys.size());
    for (const KeyParts& k : op.keys) keys.push_back(self.key_of(op.ns->name, op.group, k));
    return keys;
  }

  // What an op does before the server sees it: answered from the deny cache (true: results
  // are filled and the op is denied), or cached denials it may lift forgotten.
  bool settled_locally(const Op& op, const std::vector<std::string>& keys,
                       std::span<ItemResult> results) {
    const bool checks = op.kind == OpKind::acquire || op.kind == OpKind::decide;
    if (o.deny_cache && checks && !denials.empty() && answer_locally(op, keys, results)) {
      return true;
    }
    if (op.kind == OpKind::release || op.kind == OpKind::adjust || op.kind == OpKind::reset) {
      if (!denials.empty()) forget_denials(op, keys);  // capacity may come back
    }
    return false;
  }

  // A fast-path op as a Pending (taking its keys).
  static void fill(Pending& p, const Op& op, std::vector<std::string> keys,
                   std::span<ItemResult> results) {
    p.keys = std::move(keys);
    p.acquire = op.kind == OpKind::acquire;
    p.report = op.report;
    p.now = op.now;
    p.results = results;
    p.items.reserve(op.items.size());
    for (const OpItem& it : op.items) {
      p.items.push_back(Pending::Item{it.key, "s" + it.limit->name(), it.amount,
                                      it.limit->capacity(), detail::params(it)});
    }
  }

  // A synchronous fast-path op waits for the I/O thread: refused on it (in a callback).
  void not_on_io_thread() const {
    if (client.on_io_thread()) {
      throw std::logic_error(
          "admit::RedisStore: a synchronous call from a callback would wait for itself");
    }
  }

  // The lane of an op's keys: its hash slot in a cluster (a script's keys must share one).
  std::uint16_t lane_of(const std::vector<std::string>& keys) const {
    return o.client.cluster ? redis::key_slot(keys.front()) : 0;
  }

  // Group commit: sends `p` at once when its lane has a run to spare, else queues it for the
  // lane's next run. It is answered (Pending::answer) on the client's I/O thread, or on this
  // one if the run cannot be sent.
  void submit(Pending* p, std::uint16_t lane) {
    {
      std::lock_guard g(lanes_mu);
      Lane& l = lanes[lane];
      if (l.in_flight >= kBatchesInFlight) {
        l.queue.push_back(p);
        return;
      }
      ++l.in_flight;
    }
    send({p}, lane);
  }

  // The next run of a lane: up to kMaxBatchOps queued ops; none (and one run fewer in
  // flight) when nothing waits.
  std::vector<Pending*> take(std::uint16_t lane) {
    std::lock_guard g(lanes_mu);
    Lane& l = lanes[lane];
    const std::size_t n = std::min(l.queue.size(), kMaxBatchOps);
    if (n == 0) --l.in_flight;
    std::vector<Pending*> batch(l.queue.begin(), l.queue.begin() + static_cast<std::ptrdiff_t>(n));
    l.queue.erase(l.queue.begin(), l.queue.begin() + static_cast<std::ptrdiff_t>(n));
    return batch;
  }

  // The script's op 9 for `batch` (its header comment has the layout): each distinct limit's
  // parameters once, then the ops, each op's keys after the previous ones', all the numbers
  // in one JSON array.
  void encode(const std::vector<Pending*>& batch, std::vector<std::string>& keys,
              std::vector<std::string>& argv) const {
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
      for (const std::int64_t v : {it->capacity, it->params.a, it->params.b, it->params.r,
                                   it->params.tol_us, it->params.tol_rem}) {
        append_json(json, v);
      }
    }
    std::size_t w = 0;
    for (const Pending* p : batch) {
      append_json(json, (p->acquire ? 0 : 1) + (p->report ? 2 : 0));
      append_json(json, o.server_time ? 0 : p->now);
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

  // One script run for `batch`; answers every op of it, then, for a lane, sends what queued
  // meanwhile. Never throws: a request that cannot be sent fails its ops.
  void send(std::vector<Pending*> batch, std::optional<std::uint16_t> lane) {
    while (!batch.empty()) {
      std::vector<std::string> keys, argv;
      scripts.fetch_add(1, std::memory_order_relaxed);
      try {
        encode(batch, keys, argv);
        client.async_evalsha(script, keys, argv,
                             [this, batch, lane](std::error_code ec, redis::Reply r) {
                               deliver(batch, ec, r);
                               if (lane) send(take(*lane), lane);
                             });
        return;
      } catch (const std::exception& e) {
        deliver(batch, std::make_error_code(std::errc::invalid_argument),
                redis::Reply::error(e.what()));
      }
      if (!lane) return;
      batch = take(*lane);
    }
  }

  // Reads each op's element of a run's reply into it (or the run's error) and answers it.
  void deliver(const std::vector<Pending*>& batch, std::error_code ec, const redis::Reply& r) {
    std::string error;
    if (ec || r.is_error()) {
      error = r.str;
    } else if (!r.is_array() || r.elements.size() != batch.size()) {
      error = "unexpected reply " + redis::to_string(r);
    }
    for (std::size_t i = 0; i < batch.size(); ++i) {
      Pending* p = batch[i];
      if (!error.empty()) {
        p->error = std::make_exception_ptr(StoreUnavailable("redis script: " + error));
      } else {
        try {
          p->ok = read_fast(*p, r.elements[i]);
        } catch (...) {
          p->error = std::current_exception();
        }
      }
      p->answer();  // p may be gone after this
    }
  }

  // The server's clock, as an op's reply shows it: learned as the offset to the caller's.
  void learn_clock(Micros server_now, Micros caller_now) {
    if (o.server_time) offset.store(server_now - caller_now, std::memory_order_relaxed);
  }

  // A full reply, {all_ok, now, 7 per item}, into `results`. @return all_ok.
  bool read_items(const redis::Reply& reply, Micros caller_now, std::span<ItemResult> results) {
    const std::size_t n = results.size();
    if (!reply.is_array() || reply.elements.size() != 2 + 7 * n) {
      throw StoreUnavailable("redis script: unexpected reply " + redis::to_string(reply));
    }
    learn_clock(reply.elements[1].integer, caller_now);
    for (std::size_t i = 0; i < n; ++i) {
      const redis::Reply* e = &reply.elements[2 + 7 * i];
      ItemResult& r = results[i];
      r.ok = e[0].integer != 0;
      r.never = e[1].integer != 0;
      r.available = e[2].integer;
      r.retry_after = e[3].integer;
      r.reset_after = e[4].integer;
      r.window_end = e[5].integer;
      r.held = e[6].integer;
    }
    return reply.elements[0].integer != 0;
  }

  // A fast-path op's results from its element of a run's reply: `now` alone (every item
  // ok, nothing reported) or the full array; denials cached. @return all ok.
  bool read_fast(Pending& p, const redis::Reply& e) {
    if (e.is_integer()) {
      learn_clock(e.integer, p.now);
      std::fill(p.results.begin(), p.results.end(), ItemResult{});
      return true;
    }
    const bool ok = read_items(e, p.now, p.results);
    if (o.deny_cache && !ok) {
      for (std::size_t i = 0; i < p.items.size(); ++i) {
        const Pending::Item& it = p.items[i];
        remember(p.keys[it.key], std::string_view(it.field).substr(1), it.amount, p.now,
                 it.params, it.capacity, p.results[i]);
      }
    }
    return ok;
  }

  // Any other op: one script run of its own (retried when the clock estimate was off).
  bool apply_general(const Op& op, const std::vector<std::string>& keys,
                     std::span<ItemResult> results) {
    const Micros caller_now = op.now;
    Micros off = o.server_time ? offset.load(std::memory_order_relaxed) : 0;
    for (int attempt = 0;; ++attempt) {
      // The script's ARGV (its header comment has the layout).
      std::vector<std::string> argv;
      argv.reserve(5 + 15 * op.items.size());
      append_num(argv, static_cast<int>(op.kind));
      append_num(argv, o.server_time ? 0 : caller_now);
      argv.emplace_back(op.report ? "1" : "0");
      argv.push_back(std::to_string(op.lease_id));
      append_num(argv, std::max<Micros>(0, op.lease_expiry - op.now));
      // Window items carry the window around the estimated server time (minus a margin) and
      // the end of the next one; the script checks its clock against them.
      const Micros est = caller_now + off - (o.server_time ? kWindowMargin : 0);
      for (const OpItem& it : op.items) {
        const Limit& l = *it.limit;
        const RateParams& p = detail::params(it);
        WindowBounds w{};
        Micros next_end = 0;
        if (l.kind() == LimitKind::window) {
          w = l.window_at(est);
          next_end = l.window_at(w.end).end;
        }
        append_num(argv, it.key + 1);
        argv.push_back(l.name());
        for (const std::int64_t v :
             {static_cast<std::int64_t>(kind_code(l.kind())), it.amount, l.capacity(), p.a, p.b,
              p.r, p.tol_us, p.tol_rem, it.window_end, it.until, w.start, w.end, next_end}) {
          append_num(argv, v);
        }
      }
      scripts.fetch_add(1, std::memory_order_relaxed);
      const redis::Reply reply = client.evalsha(script, keys, argv);
      if (reply.is_error()) {
        const Micros server_now = clock_error_now(reply.str);
        if (server_now >= 0 && o.server_time && attempt < kClockRetries) {
          clock_retries.fetch_add(1, std::memory_order_relaxed);
          off = server_now - caller_now;
          offset.store(off, std::memory_order_relaxed);
          continue;
        }
        throw StoreUnavailable("redis script: " + reply.str);
      }
      const bool ok = read_items(reply, caller_now, results);
      const bool checks = op.kind == OpKind::acquire || op.kind == OpKind::decide;
      if (o.deny_cache && checks && !ok) {
        for (std::size_t i = 0; i < op.items.size(); ++i) {
          const OpItem& it = op.items[i];
          if (it.limit->kind() == LimitKind::concurrency) continue;
          remember(keys[it.key], it.limit->name(), it.amount, caller_now, detail::params(it),
                   it.limit->capacity(), results[i]);
        }
      }
      return ok;
    }
  }

  // Every master: the cluster's (from CLUSTER SLOTS) or the standalone server.
  std::vector<redis::Endpoint> masters() {
    if (!o.client.cluster) return {o.client.seeds.at(0)};
    const redis::Reply r = client.command({"CLUSTER", "SLOTS"});
    if (!r.is_array()) throw StoreUnavailable("CLUSTER SLOTS: " + redis::to_string(r));
    std::vector<redis::Endpoint> out;
    for (const auto& range : r.elements) {
      if (!range.is_array() || range.elements.size() < 3 || !range.elements[2].is_array() ||
          range.elements[2].elements.size() < 2) {
        continue;
      }
      const auto& node = range.elements[2].elements;
      redis::Endpoint ep{node[0].str, static_cast<std::uint16_t>(node[1].integer)};
      if (ep.host.empty()) ep.host = o.client.seeds.at(0).host;
      if (std::find(out.begin(), out.end(), ep) == out.end()) out.push_back(ep);
    }
    return out;
  }

  // Every key matching `pattern` on every master.
  std::vector<std::string> scan(const std::string& pattern) {
    std::vector<std::string> keys;
    for (const auto& ep : masters()) {
      std::string cursor = "0";
      do {
        const redis::Reply r = client.command_on(
            ep, {"SCAN", cursor, "MATCH", pattern, "COUNT", std::to_string(kScanCount)});
        if (!r.is_array() || r.elements.size() != 2 || !r.elements[1].is_array()) {
          throw StoreUnavailable("SCAN on " + ep.to_string() + ": " + redis::to_string(r));
        }
        cursor = r.elements[0].str;
        for (const auto& k : r.elements[1].elements) keys.push_back(k.str);
      } while (cursor != "0");
    }
    return keys;
  }

  // Runs one command per key (routed by key), all in flight at once; returns the replies.
  std::vector<redis::Reply> for_each_key(const std::vector<std::string>& keys,
                                         const std::function<std::vector<std::string>(
                                             const std::string&)>& command) {
    std::vector<redis::Reply> replies(keys.size());
    if (keys.empty()) return replies;
    struct State {
      std::mutex mu;
      std::size_t left;
      std::string error;
      std::promise<void> done;
    };
    auto st = std::make_shared<State>();
    st->left = keys.size();
    for (std::size_t i = 0; i < keys.size(); ++i) {
      client.async_command_for_key(
          keys[i], command(keys[i]), [st, &replies, i](std::error_code ec, redis::Reply r) {
            std::lock_guard g(st->mu);
            if (ec && st->error.empty()) st->error = r.str;
            replies[i] = std::move(r);
            if (--st->left == 0) st->done.set_value();
          });
    }
    st->done.get_future().wait();
    if (!st->error.empty()) throw StoreUnavailable(st->error);
    return replies;
  }

  // Every usage-state key ("<prefix>:{<ns>:<group>}:..."), not the configuration hashes
  // ("<prefix>:{<ns>}": no ':' follows the '}').
  std::string pattern_all() const { return o.prefix + ":{*}:*"; }
};

RedisStore::RedisStore(RedisStoreOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}
RedisStore::~RedisStore() = default;

std::string RedisStore::key_of(std::string_view ns, std::string_view group,
                               const KeyParts& key) const {
  std::string k;
  k.reserve(impl_->o.prefix.size() + ns.size() + group.size() + key.entity.size() +
            key.resource.size() + 8);
  k += impl_->o.prefix;
  k += ":{";
  encode_part(k, ns);
  k += ':';
  encode_part(k, group);
  k += "}:";
  encode_part(k, key.resource);
  k += ':';
  encode_part(k, key.entity);
  return k;
}

bool RedisStore::apply(const Op& op, std::span<ItemResult> results) {
  Impl& im = *impl_;
  if (op.items.empty()) return true;
  std::vector<std::string> keys = im.keys_of(op, *this);
  if (im.settled_locally(op, keys, results)) return false;
  if (!fast_path(op, keys)) return im.apply_general(op, keys, results);
  const std::uint16_t lane = im.lane_of(keys);
  im.not_on_io_thread();
  Pending p;
  Impl::fill(p, op, std::move(keys), results);
  im.submit(&p, lane);
  p.wait();
  if (p.error) std::rethrow_exception(p.error);
  return p.ok;
}

void RedisStore::apply_async(const Op& op, std::span<ItemResult> results, ApplyCallback done) {
  Impl& im = *impl_;
  bool ok = true;
  std::exception_ptr error;
  try {
    if (!op.items.empty()) {
      std::vector<std::string> keys = im.keys_of(op, *this);
      if (im.settled_locally(op, keys, results)) {
        ok = false;
      } else if (!fast_path(op, keys)) {
        ok = im.apply_general(op, keys, results);
      } else {
        const std::uint16_t lane = im.lane_of(keys);
        auto p = std::make_unique<Pending>();
        Impl::fill(*p, op, std::move(keys), results);
        p->done = std::move(done);
        im.submit(p.release(), lane);  // answered (and deleted) on the I/O thread
        return;
      }
    }
  } catch (...) {
    ok = false;
    error = std::current_exception();
  }
  done(ok, std::move(error));
}

void RedisStore::apply_batch(std::span<const Op> ops,
                             std::span<const std::span<ItemResult>> results, std::span<bool> ok) {
  if (results.size() != ops.size() || ok.size() != ops.size()) {
    throw std::invalid_argument("RedisStore::apply_batch: one results span and ok per op");
  }
  Impl& im = *impl_;
  im.not_on_io_thread();
  std::vector<std::unique_ptr<Pending>> pending(ops.size());
  std::vector<std::size_t> chunk;  // indexes of the ops of the next script run
  std::uint16_t chunk_lane = 0;
  auto flush = [&] {
    if (chunk.empty()) return;
    std::vector<Pending*> batch;
    for (const std::size_t i : chunk) batch.push_back(pending[i].get());
    im.send(std::move(batch), std::nullopt);
    for (const std::size_t i : chunk) pending[i]->wait();
    const std::vector<std::size_t> done = std::exchange(chunk, {});
    for (const std::size_t i : done) {
      if (pending[i]->error) std::rethrow_exception(pending[i]->error);
      ok[i] = pending[i]->ok;
    }
  };
  for (std::size_t i = 0; i < ops.size(); ++i) {
    const Op& op = ops[i];
    ok[i] = true;
    if (op.items.empty()) continue;
    std::vector<std::string> keys = im.keys_of(op, *this);
    if (im.settled_locally(op, keys, results[i])) {
      ok[i] = false;
      continue;
    }
    if (!fast_path(op, keys)) {
      flush();
      ok[i] = im.apply_general(op, keys, results[i]);
      continue;
    }
    const std::uint16_t lane = im.lane_of(keys);
    if (!chunk.empty() && (lane != chunk_lane || chunk.size() == kMaxBatchOps)) flush();
    pending[i] = std::make_unique<Pending>();
    Impl::fill(*pending[i], op, std::move(keys), results[i]);
    chunk.push_back(i);
    chunk_lane = lane;
  }
  flush();
}

Namespace RedisStore::open_namespace(std::string_view name) {
  validate_name("namespace", name);
  // Ids only tell this process's namespaces apart; the keys carry the name.
  std::lock_guard g(impl_->ns_mu);
  auto& v = impl_->namespaces;
  auto it = std::find(v.begin(), v.end(), name);
  if (it == v.end()) it = v.insert(v.end(), std::string(name));
  return Namespace{std::string(name), static_cast<std::uint32_t>(it - v.begin() + 1)};
}

void RedisStore::reset_namespace(const Namespace& ns) {
  std::string pattern = impl_->o.prefix + ":{";
  encode_part(pattern, ns.name);
  pattern += ":*";
  const auto keys = impl_->scan(pattern);
  impl_->for_each_key(keys, [](const std::string& k) {
    return std::vector<std::string>{"UNLINK", k};
  });
  impl_->denials.clear();
}

std::size_t RedisStore::prune(Micros now) {
  Impl& im = *impl_;
  const std::string when = std::to_string(im.o.server_time ? 0 : now);
  const auto keys = im.scan(im.pattern_all());
  std::size_t removed = 0;
  for (const std::string& k : keys) {
    const redis::Reply r =
        im.client.evalsha(im.script, {k}, {std::to_string(kOpPrune), when, "0", "0", "0"});
    if (!r.is_array() || r.elements.empty()) {
      throw StoreUnavailable("redis prune: " + redis::to_string(r));
    }
    removed += static_cast<std::size_t>(r.elements[0].integer);
  }
  return removed;
}

std::size_t RedisStore::size() const {
  Impl& im = *impl_;
  const auto keys = im.scan(im.pattern_all());
  std::size_t n = 0;
  for (const auto& r : im.for_each_key(
           keys, [](const std::string& k) { return std::vector<std::string>{"HLEN", k}; })) {
    n += static_cast<std::size_t>(std::max<std::int64_t>(0, r.integer));
  }
  return n;
}

StoreCapabilities RedisStore::capabilities() const {
  return StoreCapabilities{.durable = false, .distributed = true,
                           .server_time = impl_->o.server_time};
}

RedisStoreStats RedisStore::stats() const {
  return RedisStoreStats{impl_->scripts.load(std::memory_order_relaxed),
                         impl_->local_denials.load(std::memory_order_relaxed),
                         impl_->clock_retries.load(std::memory_order_relaxed)};
}

const RedisStoreOptions& RedisStore::options() const { return impl_->o; }
redis::Client& RedisStore::client() { return impl_->client; }

// ---------------------------------------------------------------- configuration
//
// One hash per namespace, "<prefix>:{<ns>}" (its own slot; no usage-state pattern matches it),
// a field per entry: "<kind>:<entity>:<resource>" with kind s(ystem), r(esource), d(efault of
// an entity), e(ntity) or p(arent) and the names percent-encoded (empty when unused), so
// fields never collide and list_config can decode them.

namespace {

constexpr std::string_view kConfigKinds = "srdep";  // indexed by ConfigKind

std::string config_field(const ConfigKey& k) {
  std::string f(1, kConfigKinds[static_cast<std::size_t>(k.kind)]);
  f += ':';
  encode_part(f, k.entity);
  f += ':';
  encode_part(f, k.resource);
  return f;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The inverse of encode_part; nullopt for text encode_part cannot have written.
std::optional<std::string> decode_part(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size()) return std::nullopt;
    const int hi = hex_value(s[i + 1]);
    const int lo = hex_value(s[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

std::optional<ConfigEntry> parse_config_field(std::string_view f) {
  const auto kind = kConfigKinds.find(f.empty() ? '?' : f[0]);
  if (kind == std::string_view::npos || f.size() < 3 || f[1] != ':') return std::nullopt;
  const auto colon = f.find(':', 2);
  if (colon == std::string_view::npos) return std::nullopt;
  auto entity = decode_part(f.substr(2, colon - 2));
  auto resource = decode_part(f.substr(colon + 1));
  if (!entity || !resource) return std::nullopt;
  return ConfigEntry{static_cast<ConfigKind>(kind), std::move(*entity), std::move(*resource), {}};
}

[[noreturn]] void config_failed(const char* what, const redis::Reply& r) {
  throw StoreUnavailable(std::string("redis ") + what + ": " + redis::to_string(r));
}

}  // namespace

std::string RedisStore::config_key_of(std::string_view ns) const {
  std::string k = impl_->o.prefix + ":{";
  encode_part(k, ns);
  k += '}';
  return k;
}

void RedisStore::put_config(const Namespace& ns, const ConfigKey& key, std::string_view value) {
  validate_config_key(key);
  const std::string k = config_key_of(ns.name);
  const redis::Reply r =
      value.empty()
          ? impl_->client.command_for_key(k, {"HDEL", k, config_field(key)})
          : impl_->client.command_for_key(k, {"HSET", k, config_field(key), std::string(value)});
  if (!r.is_integer()) config_failed("put_config", r);
}

void RedisStore::get_config(const Namespace& ns, std::span<const ConfigKey> keys,
                            std::span<std::optional<std::string>> values) {
  validate_config_read(keys, values);
  if (keys.empty()) return;
  std::vector<std::string> args{"HMGET", config_key_of(ns.name)};
  for (const ConfigKey& key : keys) args.push_back(config_field(key));
  const redis::Reply r = impl_->client.command_for_key(args[1], args);
  if (!r.is_array() || r.elements.size() != keys.size()) config_failed("get_config", r);
  for (std::size_t i = 0; i < keys.size(); ++i) {
    const redis::Reply& e = r.elements[i];
    values[i] = e.is_nil() ? std::nullopt : std::optional<std::string>(e.str);
  }
}

std::vector<ConfigEntry> RedisStore::list_config(const Namespace& ns) {
  const std::string k = config_key_of(ns.name);
  const redis::Reply r = impl_->client.command_for_key(k, {"HGETALL", k});
  if (!r.is_array() || r.elements.size() % 2 != 0) config_failed("list_config", r);
  std::vector<ConfigEntry> out;
  for (std::size_t i = 0; i + 1 < r.elements.size(); i += 2) {
    auto e = parse_config_field(r.elements[i].str);
    if (!e) continue;  // not a field this store writes
    e->value = r.elements[i + 1].str;
    out.push_back(std::move(*e));
  }
  std::sort(out.begin(), out.end(), [](const ConfigEntry& a, const ConfigEntry& b) {
    return std::tie(a.kind, a.entity, a.resource) < std::tie(b.kind, b.entity, b.resource);
  });
  return out;
}

}  // namespace admit
