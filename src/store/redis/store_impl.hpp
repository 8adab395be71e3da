// RedisStore::Impl: the state every part of RedisStore shares, and which file does what with
// it. The op paths (apply, deny cache, general runs) are in redis_store.cpp, the group
// commit's runs in group_commit.cpp, SCAN-based admin ops in admin_ops.cpp, configuration in
// config_ops.cpp. Internal header.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "admit/store/redis_client.hpp"
#include "admit/store/redis_store.hpp"
#include "admit_lua.hpp"
#include "deny_cache.hpp"
#include "group_commit.hpp"
#include "script_codec.hpp"

namespace admit {

struct RedisStore::Impl {
  RedisStoreOptions o;
  // Group commit (group_commit.hpp). Declared before the client, which may still run
  // callbacks while it is destroyed.
  redis_store::Lanes lanes;
  redis::Client client;
  redis::Script script{redis::detail::kAdmitLua};
  std::atomic<Micros> offset{0};  // server clock minus caller clock, as last seen
  std::atomic<std::uint64_t> scripts{0}, local_denials{0}, clock_retries{0};
  redis_store::DenyCache denials;
  std::mutex ns_mu;
  std::vector<std::string> namespaces;  // index = id - 1

  explicit Impl(RedisStoreOptions opts);

  // ---- redis_store.cpp: the op paths ----

  // The op's Redis keys, in Op::keys order.
  std::vector<std::string> keys_of(const Op& op) const;
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
  // Any other op: one script run of its own (retried when the clock estimate was off).
  bool apply_general(const Op& op, const std::vector<std::string>& keys,
                     std::span<ItemResult> results);

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
