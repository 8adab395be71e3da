// RedisStore: the class glue and the op paths (apply, apply_async, apply_batch): keys, the
// deny cache, the fast path into the group commit, every other op in a script run of its own.
// The parts: key_codec (key names), deny_cache, group_commit (script runs shared by
// concurrent acquires), script_codec (what admit.lua is sent and answers), admin_ops
// (namespaces, prune, size), config_ops (configuration); store_impl.hpp ties them together.
#include "admit/store/redis_store.hpp"

#include <algorithm>
#include <charconv>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "../kernel.hpp"
#include "admit/core/error.hpp"
#include "key_codec.hpp"
#include "script_codec.hpp"
#include "store_impl.hpp"

namespace admit {

using redis_store::Pending;

namespace {

constexpr Micros kWindowMargin = kMicrosPerSecond;  // clock estimate slack for window bounds
constexpr int kClockRetries = 2;

RedisStoreOptions validated(RedisStoreOptions o) {
  redis_store::validate_prefix(o.prefix);
  validate_audit_retention(o.audit_retention);
  return o;
}

}  // namespace

RedisStore::Impl::Impl(RedisStoreOptions opts)
    : o(validated(std::move(opts))), denials(o.deny_cache_entries), client(o.client) {}

std::vector<std::string> RedisStore::Impl::keys_of(const Op& op) const {
  std::vector<std::string> keys;
  keys.reserve(op.keys.size() + 1);
  for (const KeyParts& k : op.keys) {
    keys.push_back(redis_store::usage_key(o.prefix, op.ns->name, op.group, k));
  }
  if (redis_store::record_mode(op) != redis_store::RecordMode::none) {
    keys.push_back(redis_store::lease_key(o.prefix, op.ns->name, op.group, op.lease_id));
  }
  return keys;
}

bool RedisStore::Impl::sends(const Op& op) {
  return !op.items.empty() || redis_store::record_mode(op) != redis_store::RecordMode::none;
}

bool RedisStore::Impl::settled_locally(const Op& op, const std::vector<std::string>& keys,
                                       std::span<ItemResult> results) {
  const bool checks = op.kind == OpKind::acquire || op.kind == OpKind::decide;
  if (o.deny_cache && checks && !denials.empty() && denials.answer(op, keys, results)) {
    local_denials.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  if (op.kind == OpKind::release || op.kind == OpKind::adjust || op.kind == OpKind::reset) {
    if (!denials.empty()) denials.forget(op, keys);  // capacity may come back
  }
  return false;
}

void RedisStore::Impl::fill(Pending& p, const Op& op, std::vector<std::string> keys,
                            std::span<ItemResult> results) {
  p.keys = std::move(keys);
  p.acquire = op.kind == OpKind::acquire;
  p.report = op.report;
  p.now = op.now;
  p.results = results;
  p.items.reserve(op.items.size());
  for (const OpItem& it : op.items) {
    p.items.push_back(Pending::Item{it.key, "s" + it.limit->name(), it.amount, it.limit->capacity(),
                                    detail::params(it), it.limit->shadow()});
  }
}

void RedisStore::Impl::not_on_io_thread() const {
  if (client.on_io_thread()) {
    throw std::logic_error(
        "admit::RedisStore: a synchronous call from a callback would wait for itself");
  }
}

std::uint16_t RedisStore::Impl::lane_of(const std::vector<std::string>& keys) const {
  return o.client.cluster ? redis::key_slot(keys.front()) : 0;
}

std::vector<std::string> RedisStore::Impl::general_argv(const Op& op, Micros off) {
  const Micros estimate = op.now + off - (o.server_time ? kWindowMargin : 0);
  scripts.fetch_add(1, std::memory_order_relaxed);
  return redis_store::encode_general(op, o.server_time, op.now, estimate);
}

std::optional<bool> RedisStore::Impl::read_general(const Op& op,
                                                   const std::vector<std::string>& keys,
                                                   const redis::Reply& reply,
                                                   std::span<ItemResult> results, int attempt,
                                                   Micros& off) {
  const Micros caller_now = op.now;
  if (reply.is_error()) {
    redis_store::throw_if_lease_error(reply.str);  // a guard that did not match: nothing changed
    const Micros server_now = redis_store::clock_error_now(reply.str);
    if (server_now >= 0 && o.server_time && attempt < kClockRetries) {
      clock_retries.fetch_add(1, std::memory_order_relaxed);
      off = server_now - caller_now;
      offset.store(off, std::memory_order_relaxed);
      return std::nullopt;
    }
    throw StoreUnavailable("redis script: " + reply.str);
  }
  const bool ok = read_items(reply, caller_now, results);
  const bool checks = op.kind == OpKind::acquire || op.kind == OpKind::decide;
  if (o.deny_cache && checks && !ok) {
    for (std::size_t i = 0; i < op.items.size(); ++i) {
      const OpItem& it = op.items[i];
      if (it.limit->kind() == LimitKind::concurrency) continue;
      denials.remember(keys[it.key], it.limit->name(), it.amount, caller_now, detail::params(it),
                       it.limit->capacity(), results[i]);
    }
  }
  return ok;
}

bool RedisStore::Impl::apply_general(const Op& op, const std::vector<std::string>& keys,
                                     std::span<ItemResult> results) {
  Micros off = general_offset();
  for (int attempt = 0;; ++attempt) {
    const redis::Reply reply = client.evalsha(script, keys, general_argv(op, off));
    if (const std::optional<bool> ok = read_general(op, keys, reply, results, attempt, off)) {
      return *ok;
    }
  }
}

void RedisStore::Impl::send_general(std::unique_ptr<redis_store::General> g) {
  redis_store::General* const raw = g.get();
  try {
    const std::vector<std::string> argv = general_argv(raw->op.op(), raw->offset);
    // From here the request's callback owns the op: it runs exactly once, on the I/O
    // thread, unless async_evalsha throws (then before it took the callback).
    g.release();
    client.async_evalsha(script, raw->keys, argv, [this, raw](std::error_code ec, redis::Reply r) {
      general_replied(std::unique_ptr<redis_store::General>(raw), ec, r);
    });
  } catch (...) {
    if (!g) g.reset(raw);
    const Store::ApplyCallback done = std::move(g->done);
    g.reset();
    done(false, std::current_exception());
  }
}

void RedisStore::Impl::general_replied(std::unique_ptr<redis_store::General> g, std::error_code ec,
                                       const redis::Reply& reply) {
  bool ok = false;
  std::exception_ptr error;
  try {
    if (ec) throw StoreUnavailable(reply.str);  // as the synchronous evalsha throws it
    const std::optional<bool> answer =
        read_general(g->op.op(), g->keys, reply, g->results, g->attempt, g->offset);
    if (!answer) {  // the clock estimate was off: re-aimed, sent again
      ++g->attempt;
      send_general(std::move(g));
      return;
    }
    ok = *answer;
  } catch (...) {
    error = std::current_exception();
  }
  const Store::ApplyCallback done = std::move(g->done);
  g.reset();
  done(ok, std::move(error));
}

RedisStore::RedisStore(RedisStoreOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}
RedisStore::~RedisStore() = default;

std::string RedisStore::key_of(std::string_view ns, std::string_view group,
                               const KeyParts& key) const {
  return redis_store::usage_key(impl_->o.prefix, ns, group, key);
}

std::string RedisStore::lease_key_of(std::string_view ns, std::string_view group,
                                     std::uint64_t lease_id) const {
  return redis_store::lease_key(impl_->o.prefix, ns, group, lease_id);
}

bool RedisStore::apply(const Op& op, std::span<ItemResult> results) {
  Impl& im = *impl_;
  if (!Impl::sends(op)) return true;
  std::vector<std::string> keys = im.keys_of(op);
  if (im.settled_locally(op, keys, results)) return false;
  if (!redis_store::fast_path(op, keys)) return im.apply_general(op, keys, results);
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
    if (Impl::sends(op)) {
      std::vector<std::string> keys = im.keys_of(op);
      if (im.settled_locally(op, keys, results)) {
        ok = false;
      } else if (!redis_store::fast_path(op, keys)) {
        // Encoded now (the op may be gone once this returns) from a deep copy, kept to
        // re-encode it after a clock error; answered on the I/O thread.
        auto g = std::make_unique<redis_store::General>(op, std::move(keys), results);
        g->offset = im.general_offset();
        g->done = std::move(done);
        im.send_general(std::move(g));
        return;
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
                             std::span<const std::span<ItemResult>> results, std::span<bool> ok,
                             std::span<std::exception_ptr> errors) {
  check_batch(ops, results, ok, errors);
  Impl& im = *impl_;
  im.not_on_io_thread();
  std::fill(ok.begin(), ok.end(), false);
  std::fill(errors.begin(), errors.end(), nullptr);
  std::vector<std::unique_ptr<Pending>> pending(ops.size());
  std::vector<std::size_t> chunk;  // indexes of the ops of the next script run
  std::uint16_t chunk_lane = 0;
  std::exception_ptr lost;  // a StoreUnavailable: the ops after it are failed with it, unsent
  auto failed = [&](std::size_t i, std::exception_ptr e) {
    errors[i] = e;
    try {
      std::rethrow_exception(e);
    } catch (const StoreUnavailable&) {
      lost = e;
    } catch (...) {
    }
  };
  auto flush = [&] {
    if (chunk.empty()) return;
    std::vector<Pending*> batch;
    for (const std::size_t i : chunk) batch.push_back(pending[i].get());
    im.send(std::move(batch), std::nullopt);
    for (const std::size_t i : chunk) pending[i]->wait();
    for (const std::size_t i : std::exchange(chunk, {})) {
      if (pending[i]->error) {
        failed(i, pending[i]->error);
      } else {
        ok[i] = pending[i]->ok;
      }
    }
  };
  for (std::size_t i = 0; i < ops.size(); ++i) {
    if (lost) {
      errors[i] = lost;
      continue;
    }
    const Op& op = ops[i];
    try {
      if (!Impl::sends(op)) {
        ok[i] = true;
        continue;
      }
      std::vector<std::string> keys = im.keys_of(op);
      if (im.settled_locally(op, keys, results[i])) continue;
      if (!redis_store::fast_path(op, keys)) {
        flush();
        if (lost) {
          errors[i] = lost;
          continue;
        }
        ok[i] = im.apply_general(op, keys, results[i]);
        continue;
      }
      const std::uint16_t lane = im.lane_of(keys);
      if (!chunk.empty() && (lane != chunk_lane || chunk.size() == redis_store::kMaxBatchOps)) {
        flush();
        if (lost) {
          errors[i] = lost;
          continue;
        }
      }
      pending[i] = std::make_unique<Pending>();
      Impl::fill(*pending[i], op, std::move(keys), results[i]);
      chunk.push_back(i);
      chunk_lane = lane;
    } catch (...) {
      failed(i, std::current_exception());
    }
  }
  flush();
}

StoreCapabilities RedisStore::capabilities() const {
  return StoreCapabilities{.durable = false,
                           .distributed = true,
                           .server_time = impl_->o.server_time,
                           .leases = true,
                           .audit = true,
                           .learned = true};
}

std::optional<LeaseRecord> RedisStore::get_lease(const Namespace& ns, std::string_view group,
                                                 std::uint64_t lease_id, Micros now) {
  Impl& im = *impl_;
  im.not_on_io_thread();
  const std::string k = lease_key_of(ns.name, group, lease_id);
  const redis::Reply r = im.client.command_for_key(k, {"HMGET", k, "x", "d"});
  if (!r.is_array() || r.elements.size() != 2) {
    throw StoreUnavailable("redis get_lease: unexpected reply " + redis::to_string(r));
  }
  const redis::Reply& x = r.elements[0];
  const redis::Reply& d = r.elements[1];
  if (!x.is_string() || !d.is_string()) return std::nullopt;  // none (or not one it wrote)
  Micros expiry = 0;
  const char* end = x.str.data() + x.str.size();
  if (std::from_chars(x.str.data(), end, expiry).ptr != end) return std::nullopt;
  // As the script decides: by its clock (with server_time, the caller's plus the last offset).
  const Micros at = now + im.general_offset();
  if (expiry <= at) return std::nullopt;
  return LeaseRecord{d.str, expiry};
}

RedisStoreStats RedisStore::stats() const {
  return RedisStoreStats{impl_->scripts.load(std::memory_order_relaxed),
                         impl_->local_denials.load(std::memory_order_relaxed),
                         impl_->clock_retries.load(std::memory_order_relaxed)};
}

const RedisStoreOptions& RedisStore::options() const { return impl_->o; }
redis::Client& RedisStore::client() { return impl_->client; }

}  // namespace admit
