// Internals of admit::redis::Client shared by the client core and its connections. Everything
// here except Core::submit() and the Stats counters is used on the I/O thread only.
#pragma once

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "admit/store/redis_client.hpp"
#include "resp.hpp"

namespace admit::redis {

/// A script's source and its SHA1 as Redis computed it: unknown until the first SCRIPT LOAD
/// reply, then set once (shared by every client and node: the digest depends on the source
/// only). Set on an I/O thread, read on any.
struct Script::Data {
  explicit Data(std::string src) : source(std::move(src)) {}

  const std::string source;

  /// The SHA1, or nullptr while no SCRIPT LOAD has returned it.
  const std::string* known_sha1() const {
    return state_.load(std::memory_order_acquire) == kKnown ? &sha1_ : nullptr;
  }
  /// Records SCRIPT LOAD's reply; the first one wins (all are the same).
  void learn_sha1(std::string_view sha1) const {
    int expected = kUnknown;
    if (state_.compare_exchange_strong(expected, kSetting, std::memory_order_acq_rel)) {
      sha1_ = sha1;
      state_.store(kKnown, std::memory_order_release);
    }
  }

 private:
  static constexpr int kUnknown = 0, kSetting = 1, kKnown = 2;
  mutable std::atomic<int> state_{kUnknown};
  mutable std::string sha1_;  // written once, before state_ becomes kKnown
};

namespace detail {

using Clock = std::chrono::steady_clock;
class Connection;

/// One request on its way: encoded command, completion, deadline, routing state.
struct Request {
  Command cmd;
  Callback cb;
  Clock::time_point deadline;
  int slot = -1;                 ///< cluster slot; -1 = no key
  int redirects = 0;             ///< MOVED/ASK followed so far
  bool asking = false;           ///< ASK redirect: ASKING goes first
  bool internal = false;         ///< the client's own (CLUSTER SLOTS, ...)
  bool script_reloaded = false;  ///< NOSCRIPT already handled once
  /// EVALSHA issued before the script's SHA1 was known: `cmd` carries a placeholder, and the
  /// node loads the script (SCRIPT LOAD) before it is sent.
  bool needs_sha = false;
  std::shared_ptr<const Script::Data> script;  ///< for EVALSHA: what to load (NOSCRIPT)
  std::optional<Endpoint> node;                ///< cluster: this node, not the slot's
};
using RequestPtr = std::unique_ptr<Request>;

/// Counters behind ClientStats (relaxed atomics: read from any thread).
struct Stats {
  std::atomic<std::uint64_t> commands{0}, connects{0}, reconnects{0}, connect_failures{0},
      connection_losses{0}, timeouts{0}, moved{0}, asked{0}, slot_map_loads{0}, script_loads{0},
      writes{0}, pending{0}, ready_connections{0};
  static void add(std::atomic<std::uint64_t>& c, std::uint64_t n = 1) {
    c.fetch_add(n, std::memory_order_relaxed);
  }
};

/// The client: submission queue, I/O thread, nodes, cluster slot map, request deadlines.
class Core {
 public:
  explicit Core(ClientOptions options);
  ~Core();
  Core(const Core&) = delete;
  Core& operator=(const Core&) = delete;

  // ---- any thread ----
  /// Queues a request for the I/O thread (requests from one thread keep their order).
  void submit(RequestPtr req);
  /// Fails an accepted (counted) request on the I/O thread without sending it.
  void submit_rejected(RequestPtr req, Errc e, std::string why);
  bool on_io_thread() const { return std::this_thread::get_id() == io_thread_id_; }
  const ClientOptions& options() const { return options_; }
  /// The TLS settings every connection uses (CA, client certificate, verification); null
  /// without TLS.
  boost::asio::ssl::context* tls_context() const { return tls_.get(); }
  Stats& stats() { return stats_; }
  const Stats& stats() const { return stats_; }
  /// Fails every request with Errc::shutdown and joins the I/O thread.
  void shutdown();

  // ---- I/O thread ----
  boost::asio::io_context& io() { return io_; }
  /// Completes a request: the callback runs now. Counts timeouts and pending.
  void deliver(RequestPtr req, std::error_code ec, Reply reply);
  /// Completes a request with a failure; `message` becomes the error reply's text.
  void fail(RequestPtr req, Errc e, std::string message);
  /// A reply for `req` from `conn`: follows MOVED/ASK, reloads scripts on NOSCRIPT, or delivers.
  void on_reply(Connection& conn, RequestPtr req, Reply reply);
  void on_connection_up(Connection& conn, bool reconnect);
  void on_connection_down(Connection& conn);
  /// Makes sure the deadline sweep runs no later than `deadline`.
  void watch_deadline(Clock::time_point deadline);
  bool stopped() const { return stopped_; }

 private:
  void drain();
  void route(RequestPtr req);
  void redirect(Connection& from, RequestPtr req, Reply reply, bool ask);
  std::shared_ptr<Connection> node(const Endpoint& ep);
  Connection* next_master();
  void request_refresh();
  void start_refresh();
  void refresh_from(std::shared_ptr<std::vector<std::shared_ptr<Connection>>> candidates,
                    std::size_t index, std::string errors);
  bool apply_slot_map(const Connection& from, const Reply& reply, std::string& why);
  void on_sweep();
  void stop_all();

  const ClientOptions options_;
  // Before io_ and the nodes: every TLS stream is gone before it is.
  const std::unique_ptr<boost::asio::ssl::context> tls_;
  Stats stats_;
  boost::asio::io_context io_{1};
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_{
      io_.get_executor()};

  std::mutex mu_;  // guards the three below
  std::vector<RequestPtr> submitted_;
  bool drain_posted_ = false;
  bool stopping_ = false;

  // I/O thread state.
  std::vector<RequestPtr> draining_;
  bool stopped_ = false;
  std::unordered_map<std::string, std::shared_ptr<Connection>> nodes_;  // by Endpoint string
  std::shared_ptr<Connection> standalone_;
  std::vector<Connection*> slots_;    // cluster: slot -> master (empty: no map yet)
  std::vector<Connection*> masters_;  // distinct masters of the map
  std::size_t next_master_ = 0;
  bool refreshing_ = false;
  bool map_stale_ = false;
  Clock::time_point last_refresh_{};
  std::deque<RequestPtr> awaiting_map_;  // cluster requests waiting for the first slot map
  boost::asio::steady_timer sweep_timer_{io_};
  Clock::time_point sweep_at_ = Clock::time_point::max();

  std::thread thread_;
  std::thread::id io_thread_id_;
};

}  // namespace detail
}  // namespace admit::redis
