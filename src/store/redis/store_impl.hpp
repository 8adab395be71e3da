// RedisStore::Impl: the state every part of RedisStore shares, and which file does what with
// it. The op paths (apply, deny cache, general runs) are in redis_store.cpp, the group
// commit's runs in group_commit.cpp, SCAN-based admin ops in admin_ops.cpp, configuration in
// config_ops.cpp. Internal header.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "admit/store/redis_client.hpp"
#include "admit/store/redis_store.hpp"
#include "admit_lua.hpp"
#include "deny_cache.hpp"
#include "group_commit.hpp"
#include "script_codec.hpp"

namespace admit {

namespace redis_store {

// An asynchronous op off the fast path (apply_async) on its way: a deep copy of the op (to
// re-encode it when the clock estimate was off, and to cache its denials), its Redis keys,
// where its results go and who is told. Owned by its request's callback while in flight.
struct General {
  General(const Op& o, std::vector<std::string> k, std::span<ItemResult> r)
      : op(o), keys(std::move(k)), results(r) {}

  OwnedOp op;
  std::vector<std::string> keys;
  std::span<ItemResult> results;  // the caller keeps them valid until `done` ran
  Store::ApplyCallback done;
  Micros offset = 0;  // the clock offset the op is encoded with
  int attempt = 0;
};

}  // namespace redis_store

struct RedisStore::Impl {
  RedisStoreOptions o;
  // What the client's callbacks use (replies read, runs sent again) is declared before the
  // client, which may still run callbacks while it is destroyed.
  redis_store::Lanes lanes;  // group commit (group_commit.hpp)
  redis::Script script{redis::detail::kAdmitLua};
  std::atomic<Micros> offset{0};  // server clock minus caller clock, as last seen
  std::atomic<std::uint64_t> scripts{0}, local_denials{0}, clock_retries{0};
  redis_store::DenyCache denials;
  redis::Client client;
  std::mutex ns_mu;
  std::vector<std::string> namespaces;  // index = id - 1

  explicit Impl(RedisStoreOptions opts);

  // ---- redis_store.cpp: the op paths ----

  // The op's Redis keys, in Op::keys order, then its lease record's if it has one
  // (redis_store::record_mode(); the record shares the usage keys' hash slot).
  std::vector<std::string> keys_of(const Op& op) const;
  // Whether `op` needs the server: it has items, or a lease record to write or check.
  static bool sends(const Op& op);
  // What an op does before the server sees it: answered from the deny cache (true: results
  // are filled and the op is denied), or cached denials it may lift forgotten.
  bool settled_locally(const Op& op, const std::vector<std::string>& keys,
                       std::span<ItemResult> results);
  // A fast-path op as a Pending (taking its keys).
  static void fill(redis_store::Pending& p, const Op& op, std::vector<std::string> keys,
                   std::span<ItemResult> results);
  // A synchronous fast-path op waits for the I/O thread: refused on it (in a callback).
  void not_on_io_thread() const;
  // The lane of an op's keys: its hash slot in a cluster (a script's keys must share one).
  std::uint16_t lane_of(const std::vector<std::string>& keys) const;
  // The server's clock, as an op's reply shows it: learned as the offset to the caller's.
  void learn_clock(Micros server_now, Micros caller_now) {
    if (o.server_time) offset.store(server_now - caller_now, std::memory_order_relaxed);
  }
  // A full reply, {all_ok, now, 7 per item}, into `results`. @return all_ok.
  bool read_items(const redis::Reply& reply, Micros caller_now, std::span<ItemResult> results) {
    Micros server_now = 0;
    const bool ok = redis_store::decode_items(reply, results, server_now);
    learn_clock(server_now, caller_now);
    return ok;
  }
  // Any other op: one script run of its own (retried when the clock estimate was off),
  // waited for here. Both forms run general_argv() and read_general() only.
  bool apply_general(const Op& op, const std::vector<std::string>& keys,
                     std::span<ItemResult> results);
  // The same asynchronously: sends the run and returns; g->done runs on the I/O thread (or
  // on this one if the request cannot be sent). Never throws; never waits for the client.
  void send_general(std::unique_ptr<redis_store::General> g);
  // The clock offset a general op starts with: the last one seen (server_time), else 0.
  Micros general_offset() const {
    return o.server_time ? offset.load(std::memory_order_relaxed) : 0;
  }
  // A general op's ARGV, its window bounds aimed at the caller's clock plus `off`; counts a
  // script run.
  std::vector<std::string> general_argv(const Op& op, Micros off);
  // A general op's reply into `results` (attempt `attempt`, encoded with `off`): what apply()
  // returns, with its denials cached; or nullopt when the server's clock was outside the
  // windows sent and the op must be sent again (`off` re-aimed at the server's clock).
  // @throws LeaseNotFound for the script's ADMIT_LEASE error (a guard that did not match);
  //         StoreUnavailable for any other error reply or a reply of another shape.
  std::optional<bool> read_general(const Op& op, const std::vector<std::string>& keys,
                                   const redis::Reply& reply, std::span<ItemResult> results,
                                   int attempt, Micros& off);
  // send_general()'s completion, on the I/O thread: answers g->done, or sends again.
  void general_replied(std::unique_ptr<redis_store::General> g, std::error_code ec,
                       const redis::Reply& reply);

  // ---- group_commit.cpp: the group commit's script runs ----

  // Sends `p` at once when its lane has a run to spare, else queues it for the lane's next
  // run. It is answered (Pending::answer) on the client's I/O thread, or on this one if the
  // run cannot be sent.
  void submit(redis_store::Pending* p, std::uint16_t lane) {
    if (lanes.enter(p, lane)) send({p}, lane);
  }
  // One script run for `batch`; answers every op of it, then, for a lane, sends what queued
  // meanwhile. Never throws: a request that cannot be sent fails its ops.
  void send(std::vector<redis_store::Pending*> batch, std::optional<std::uint16_t> lane);
  // Reads each op's element of a run's reply into it (or the run's error) and answers it.
  void deliver(const std::vector<redis_store::Pending*>& batch, std::error_code ec,
               const redis::Reply& r);
  // A fast-path op's results from its element of a run's reply: `now` alone (every item
  // ok, nothing reported) or the full array; denials cached. @return all ok.
  bool read_fast(redis_store::Pending& p, const redis::Reply& e);

  // ---- admin_ops.cpp: SCAN-based operations ----

  // Every master: the cluster's (from CLUSTER SLOTS) or the standalone server.
  std::vector<redis::Endpoint> masters();
  // Every key matching `pattern` on every master.
  std::vector<std::string> scan(const std::string& pattern);
  // Runs one command per key (routed by key), all in flight at once; returns the replies.
  std::vector<redis::Reply> for_each_key(
      const std::vector<std::string>& keys,
      const std::function<std::vector<std::string>(const std::string&)>& command);
};

}  // namespace admit
