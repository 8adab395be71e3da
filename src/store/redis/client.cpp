// admit::redis::Client: the submission queue, the I/O thread, routing (standalone or by cluster
// slot), MOVED/ASK, NOSCRIPT, and the deadline sweep. Sockets live in connection.cpp.
#include <algorithm>
#include <boost/asio/post.hpp>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <stdexcept>
#include <utility>

#include "admit/core/error.hpp"
#include "admit/store/redis_client.hpp"
#include "connection.hpp"
#include "core.hpp"

namespace admit::redis {

namespace asio = boost::asio;

namespace detail {

namespace {

constexpr std::size_t kSlots = 16384;
// A MOVED or a lost node asks for a new slot map; at most one load per this interval.
constexpr auto kMinRefreshInterval = std::chrono::milliseconds(100);

// The TLS context of every connection: TLS 1.2+, the CA store, the client certificate. Files
// are read here, so a bad one fails the constructor (ValidationError), not each connection.
std::unique_ptr<asio::ssl::context> make_tls_context(const TlsOptions& t) {
  if (!t.enabled) return nullptr;
  namespace ssl = asio::ssl;
  auto ctx = std::make_unique<ssl::context>(ssl::context::tls_client);
  boost::system::error_code ec;
  auto check = [&ec](const char* field, const std::string& value, const char* what) {
    if (ec) throw ValidationError(field, value, what + (": " + ec.message()));
  };
  if (SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION) != 1) {
    throw ValidationError("tls", "", "OpenSSL refused TLS 1.2 as the minimum version");
  }
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_compression, ec);
  check("tls", "", "cannot set the TLS options");
  if (t.ca_file.empty()) {
    if (t.verify) {
      ctx->set_default_verify_paths(ec);
      check("tls.ca_file", "", "the system's CA store cannot be loaded");
    }
  } else {
    ctx->load_verify_file(t.ca_file, ec);
    check("tls.ca_file", t.ca_file, "cannot be loaded");
  }
  ctx->set_verify_mode(t.verify ? ssl::verify_peer : ssl::verify_none, ec);
  check("tls.verify", t.verify ? "full" : "none", "cannot be set");
  if (!t.cert_file.empty()) {
    // No passphrase: OpenSSL would otherwise ask for one on the terminal (and wait).
    ctx->set_password_callback(
        [](std::size_t, ssl::context::password_purpose) { return std::string(); }, ec);
    check("tls.key_file", t.key_file, "cannot be set up");
    ctx->use_certificate_chain_file(t.cert_file, ec);
    check("tls.cert_file", t.cert_file, "cannot be loaded");
    ctx->use_private_key_file(t.key_file, ssl::context::pem, ec);
    check("tls.key_file", t.key_file, "cannot be loaded");
    if (SSL_CTX_check_private_key(ctx->native_handle()) != 1) {
      throw ValidationError("tls.key_file", t.key_file, "is not the key of tls.cert_file");
    }
  }
  return ctx;
}

}  // namespace

Core::Core(ClientOptions options)
    : options_(std::move(options)), tls_(make_tls_context(options_.tls)) {
  if (!options_.cluster) standalone_ = node(options_.seeds.front());
  thread_ = std::thread([this] {
    for (;;) {
      try {
        io_.run();
        return;
      } catch (...) {
        // Only an allocation failure can get here (callbacks are guarded): keep serving.
      }
    }
  });
  io_thread_id_ = thread_.get_id();
}

Core::~Core() { shutdown(); }

void Core::shutdown() {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  if (on_io_thread()) {
    std::fputs("admit::redis::Client destroyed from one of its callbacks\n", stderr);
    std::abort();
  }
  asio::post(io_, [this] { stop_all(); });
  work_.reset();
  thread_.join();
}

void Core::submit(RequestPtr req) {
  bool post = false;
  {
    std::lock_guard lock(mu_);
    if (!stopping_) {
      submitted_.push_back(std::move(req));
      post = !std::exchange(drain_posted_, true);
    }
  }
  if (req) {  // shutting down: fail it on the I/O thread, like every other completion
    asio::post(io_, [this, r = std::move(req)]() mutable {
      fail(std::move(r), Errc::shutdown, "redis client is shutting down");
    });
    return;
  }
  if (post) asio::post(io_, [this] { drain(); });
}

void Core::submit_rejected(RequestPtr req, Errc e, std::string why) {
  asio::post(io_, [this, r = std::move(req), e, why = std::move(why)]() mutable {
    fail(std::move(r), e, std::move(why));
  });
}

void Core::drain() {
  {
    std::lock_guard lock(mu_);
    draining_.swap(submitted_);
    drain_posted_ = false;
  }
  for (auto& r : draining_) {
    if (stopped_) {
      fail(std::move(r), Errc::shutdown, "redis client is shutting down");
    } else {
      route(std::move(r));
    }
  }
  draining_.clear();
}

void Core::deliver(RequestPtr req, std::error_code ec, Reply reply) {
  if (!req->internal) {
    stats_.pending.fetch_sub(1, std::memory_order_relaxed);
    if (ec == Errc::timeout) Stats::add(stats_.timeouts);
  }
  Callback cb = std::move(req->cb);
  req.reset();
  if (!cb) return;
  try {
    cb(ec, std::move(reply));
  } catch (...) {
    // Documented: an exception from a callback is dropped.
  }
}

void Core::fail(RequestPtr req, Errc e, std::string message) {
  deliver(std::move(req), make_error_code(e), Reply::error(std::move(message)));
}

void Core::route(RequestPtr req) {
  if (!options_.cluster) {
    standalone_->enqueue(std::move(req));
    return;
  }
  if (req->node) {
    node(*req->node)->enqueue(std::move(req));
    return;
  }
  if (slots_.empty()) {
    watch_deadline(req->deadline);
    awaiting_map_.push_back(std::move(req));
    if (!refreshing_) start_refresh();
    return;
  }
  if (map_stale_) request_refresh();
  Connection* target = req->slot >= 0 ? slots_[static_cast<std::size_t>(req->slot)] : next_master();
  if (target == nullptr) {
    const std::string why =
        "cluster slot " + std::to_string(req->slot) + " is not served by any node";
    fail(std::move(req), Errc::cluster_unavailable, why);
    request_refresh();
    return;
  }
  target->enqueue(std::move(req));
}

void Core::on_reply(Connection& conn, RequestPtr req, Reply reply) {
  const bool asked = std::exchange(req->asking, false);
  if (!req->internal && reply.is_error()) {
    const std::string_view code = reply.error_code();
    if (options_.cluster && (code == "MOVED" || code == "ASK")) {
      redirect(conn, std::move(req), std::move(reply), code == "ASK");
      return;
    }
    if (code == "NOSCRIPT" && req->script && !req->script_reloaded) {
      req->script_reloaded = true;
      req->asking = asked;  // an importing node serves the resend only after ASKING again
      conn.load_script(std::move(req));
      return;
    }
    if (options_.cluster && code == "CLUSTERDOWN") request_refresh();
  }
  deliver(std::move(req), {}, std::move(reply));
}

void Core::redirect(Connection& from, RequestPtr req, Reply reply, bool ask) {
  // "MOVED 3999 127.0.0.1:6381", "ASK 3999 :6381" (empty host: the node that answered).
  const std::string_view text = reply.str;
  const auto sp1 = text.find(' ');
  const auto sp2 = sp1 == std::string_view::npos ? sp1 : text.find(' ', sp1 + 1);
  const auto colon = text.rfind(':');
  unsigned slot = 0;
  unsigned port = 0;
  bool ok = sp2 != std::string_view::npos && colon != std::string_view::npos && colon > sp2;
  if (ok) {
    const auto s = text.substr(sp1 + 1, sp2 - sp1 - 1);
    const auto p = text.substr(colon + 1);
    ok = std::from_chars(s.data(), s.data() + s.size(), slot).ec == std::errc{} &&
         std::from_chars(p.data(), p.data() + p.size(), port).ec == std::errc{} && slot < kSlots &&
         port > 0 && port <= 65535;
  }
  if (!ok) {
    deliver(std::move(req), {}, std::move(reply));  // not a redirect we understand
    return;
  }
  if (req->redirects >= options_.max_redirects) {
    fail(std::move(req), Errc::too_many_redirects,
         "too many cluster redirects (" + std::to_string(options_.max_redirects) +
             "), last: " + reply.str);
    return;
  }
  ++req->redirects;
  Endpoint ep{std::string(text.substr(sp2 + 1, colon - sp2 - 1)), static_cast<std::uint16_t>(port)};
  if (ep.host.empty()) ep.host = from.endpoint().host;
  auto target = node(ep);
  if (ask) {
    Stats::add(stats_.asked);
    req->asking = true;  // ASKING, then the command, once; the slot map stays as it is
  } else {
    Stats::add(stats_.moved);
    if (!slots_.empty()) {
      slots_[slot] = target.get();
      if (std::find(masters_.begin(), masters_.end(), target.get()) == masters_.end()) {
        masters_.push_back(target.get());
      }
    }
    request_refresh();
  }
  target->enqueue(std::move(req));
}

std::shared_ptr<Connection> Core::node(const Endpoint& ep) {
  auto key = ep.to_string();
  auto it = nodes_.find(key);
  if (it == nodes_.end()) {
    it = nodes_.emplace(std::move(key), std::make_shared<Connection>(*this, ep)).first;
    // A node first named after stop_all (a redirect or slot map delivered meanwhile) is
    // born closed: it fails what it is given and never opens a socket.
    if (stopped_) it->second->shutdown();
  }
  return it->second;
}

Connection* Core::next_master() {
  if (masters_.empty()) return nullptr;
  return masters_[next_master_++ % masters_.size()];
}

void Core::request_refresh() {
  map_stale_ = true;
  if (refreshing_ || stopped_ || Clock::now() - last_refresh_ < kMinRefreshInterval) return;
  start_refresh();
}

void Core::start_refresh() {
  refreshing_ = true;
  map_stale_ = false;
  last_refresh_ = Clock::now();
  // Nodes of the current map first (they know the latest layout), then the seeds.
  auto candidates = std::make_shared<std::vector<std::shared_ptr<Connection>>>();
  for (Connection* m : masters_) candidates->push_back(m->shared_from_this());
  for (const auto& seed : options_.seeds) {
    auto c = node(seed);
    if (std::find(candidates->begin(), candidates->end(), c) == candidates->end()) {
      candidates->push_back(std::move(c));
    }
  }
  refresh_from(std::move(candidates), 0, {});
}

void Core::refresh_from(std::shared_ptr<std::vector<std::shared_ptr<Connection>>> candidates,
                        std::size_t index, std::string errors) {
  if (stopped_) {
    refreshing_ = false;
    return;
  }
  if (index >= candidates->size()) {
    refreshing_ = false;
    map_stale_ = true;
    auto waiting = std::exchange(awaiting_map_, {});
    for (auto& r : waiting) {
      fail(std::move(r), Errc::cluster_unavailable,
           "could not load the cluster slot map: " + errors);
    }
    return;
  }
  auto conn = (*candidates)[index];
  auto req = std::make_unique<Request>();
  const std::string_view args[] = {"CLUSTER", "SLOTS"};
  req->cmd = Command::encode(args);
  req->internal = true;
  req->deadline = Clock::now() + options_.connect_timeout + options_.command_timeout;
  req->cb = [this, candidates, index, conn, errors](std::error_code ec, Reply reply) {
    if (stopped_) {
      refreshing_ = false;
      return;
    }
    std::string why;
    if (!ec && !reply.is_error() && apply_slot_map(*conn, reply, why)) {
      refreshing_ = false;
      Stats::add(stats_.slot_map_loads);
      auto waiting = std::exchange(awaiting_map_, {});
      for (auto& r : waiting) route(std::move(r));
      return;
    }
    if (why.empty()) why = reply.str;
    refresh_from(candidates, index + 1,
                 errors + (errors.empty() ? "" : "; ") + conn->name() + ": " + why);
  };
  conn->enqueue(std::move(req));
}

bool Core::apply_slot_map(const Connection& from, const Reply& reply, std::string& why) {
  // [[start, end, [host, port, id, ...], replica...], ...]
  if (!reply.is_array() || reply.elements.empty()) {
    why = "CLUSTER SLOTS returned no slots";
    return false;
  }
  std::vector<Connection*> slots(kSlots, nullptr);
  std::vector<Connection*> masters;
  for (const Reply& range : reply.elements) {
    const bool shaped = range.is_array() && range.elements.size() >= 3 &&
                        range.elements[0].is_integer() && range.elements[1].is_integer() &&
                        range.elements[2].is_array() && range.elements[2].elements.size() >= 2 &&
                        range.elements[2].elements[0].is_string() &&
                        range.elements[2].elements[1].is_integer();
    if (!shaped) {
      why = "malformed CLUSTER SLOTS reply: " + to_string(range);
      return false;
    }
    const std::int64_t start = range.elements[0].integer;
    const std::int64_t end = range.elements[1].integer;
    const std::int64_t port = range.elements[2].elements[1].integer;
    if (start < 0 || end < start || end >= static_cast<std::int64_t>(kSlots) || port <= 0 ||
        port > 65535) {
      why = "malformed CLUSTER SLOTS reply: " + to_string(range);
      return false;
    }
    Endpoint ep{range.elements[2].elements[0].str, static_cast<std::uint16_t>(port)};
    if (ep.host.empty() || ep.host == "?") ep.host = from.endpoint().host;
    Connection* c = node(ep).get();
    std::fill(slots.begin() + start, slots.begin() + end + 1, c);
    if (std::find(masters.begin(), masters.end(), c) == masters.end()) masters.push_back(c);
  }
  slots_ = std::move(slots);
  masters_ = std::move(masters);
  return true;
}

void Core::on_connection_up(Connection&, bool reconnect) {
  Stats::add(stats_.connects);
  if (reconnect) Stats::add(stats_.reconnects);
  Stats::add(stats_.ready_connections);
}

void Core::on_connection_down(Connection&) {
  if (options_.cluster) map_stale_ = true;  // a failover may have moved its slots
}

void Core::watch_deadline(Clock::time_point deadline) {
  if (stopped_ || deadline >= sweep_at_) return;
  sweep_at_ = deadline;
  sweep_timer_.expires_at(deadline);
  sweep_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec != asio::error::operation_aborted) on_sweep();
  });
}

void Core::on_sweep() {
  if (stopped_) return;
  sweep_at_ = Clock::time_point::max();
  const auto now = Clock::now();
  if (std::any_of(awaiting_map_.begin(), awaiting_map_.end(),
                  [now](const RequestPtr& r) { return r->deadline <= now; })) {
    std::deque<RequestPtr> keep;
    std::vector<RequestPtr> expired;
    for (auto& r : awaiting_map_) {
      if (r->deadline <= now) {
        expired.push_back(std::move(r));
      } else {
        keep.push_back(std::move(r));
      }
    }
    awaiting_map_.swap(keep);
    for (auto& r : expired) {
      fail(std::move(r), Errc::timeout,
           "request timed out waiting for the cluster slot map after " +
               std::to_string(options_.command_timeout.count()) + " ms");
    }
  }
  // Copy: callbacks may add nodes.
  std::vector<std::shared_ptr<Connection>> conns;
  conns.reserve(nodes_.size());
  for (const auto& [name, c] : nodes_) conns.push_back(c);
  auto next = Clock::time_point::max();
  for (const auto& c : conns) next = std::min(next, c->sweep(now));
  for (const auto& r : awaiting_map_) next = std::min(next, r->deadline);
  if (next != Clock::time_point::max()) watch_deadline(next);
}

void Core::stop_all() {
  // After this no handler starts I/O or arms a timer (every entry point checks stopped_ or
  // the connection's State::closed), and every outstanding operation is cancelled here, so
  // io_.run() returns once their operation_aborted completions have run.
  stopped_ = true;
  sweep_at_ = Clock::time_point::min();  // watch_deadline() never re-arms the sweep
  sweep_timer_.cancel();
  const std::string why = "redis client is shutting down";
  std::vector<RequestPtr> submitted;
  {
    std::lock_guard lock(mu_);
    submitted.swap(submitted_);
  }
  for (auto& r : submitted) fail(std::move(r), Errc::shutdown, why);
  auto waiting = std::exchange(awaiting_map_, {});
  for (auto& r : waiting) fail(std::move(r), Errc::shutdown, why);
  std::vector<std::shared_ptr<Connection>> conns;
  for (const auto& [name, c] : nodes_) conns.push_back(c);
  for (const auto& c : conns) c->shutdown();
}

}  // namespace detail

// ---- Client ----

namespace {

using detail::Request;
using detail::RequestPtr;

void check(bool ok, const char* field, const std::string& value, const char* why) {
  if (!ok) throw ValidationError(field, value, why);
}

ClientOptions validated(ClientOptions o) {
  check(!o.seeds.empty(), "seeds", "", "at least one endpoint is required");
  for (const auto& s : o.seeds) {
    check(!s.host.empty(), "seeds", s.to_string(), "the host is empty");
    check(s.port != 0, "seeds", s.to_string(), "the port must be 1..65535");
  }
  check(o.db >= 0, "db", std::to_string(o.db), "must be >= 0");
  check(!o.cluster || o.db == 0, "db", std::to_string(o.db), "must be 0 in cluster mode");
  check(o.username.empty() || !o.password.empty(), "username", o.username,
        "a username needs a password");
  check(o.connect_timeout.count() > 0, "connect_timeout", std::to_string(o.connect_timeout.count()),
        "must be > 0 ms");
  check(o.command_timeout.count() > 0, "command_timeout", std::to_string(o.command_timeout.count()),
        "must be > 0 ms");
  check(o.max_in_flight > 0, "max_in_flight", "0", "must be > 0");
  check(o.max_pending > 0, "max_pending", "0", "must be > 0");
  check(o.max_redirects >= 0, "max_redirects", std::to_string(o.max_redirects), "must be >= 0");
  check(o.reconnect_backoff.count() >= 0, "reconnect_backoff",
        std::to_string(o.reconnect_backoff.count()), "must be >= 0 ms");
  check(o.reconnect_backoff_max >= o.reconnect_backoff, "reconnect_backoff_max",
        std::to_string(o.reconnect_backoff_max.count()), "must be >= reconnect_backoff");
  const TlsOptions& t = o.tls;
  if (!t.enabled) {
    const TlsOptions off;
    check(t == off, "tls.enabled", "false",
          "TLS options are set but TLS is off (enable it, or use rediss://)");
  }
  check(t.cert_file.empty() == t.key_file.empty(),
        t.cert_file.empty() ? "tls.cert_file" : "tls.key_file", "",
        "a client certificate needs both tls.cert_file and tls.key_file");
  return o;
}

void start(detail::Core& core, std::span<const std::string_view> args, int slot,
           std::shared_ptr<const Script::Data> script, Callback cb,
           std::optional<Endpoint> node = std::nullopt, bool needs_sha = false) {
  // Redis ignores an empty command without a reply: the replies would be out of step.
  if (args.empty()) throw ValidationError("args", "", "a command needs at least its name");
  auto req = std::make_unique<Request>();
  req->cmd = detail::Command::encode(args);  // may throw: nothing counted yet
  auto& st = core.stats();
  if (st.pending.fetch_add(1, std::memory_order_relaxed) >= core.options().max_pending) {
    req->cb = std::move(cb);
    core.submit_rejected(
        std::move(req), Errc::overloaded,
        "more than " + std::to_string(core.options().max_pending) + " redis requests pending");
    return;
  }
  detail::Stats::add(st.commands);
  req->cb = std::move(cb);
  req->slot = slot;
  req->script = std::move(script);
  req->needs_sha = needs_sha;
  req->node = std::move(node);
  req->deadline = detail::Clock::now() + core.options().command_timeout;
  core.submit(std::move(req));
}

std::vector<std::string_view> views(const std::vector<std::string>& args) {
  return {args.begin(), args.end()};
}

template <class Start>
Reply wait_for(const detail::Core& core, Start&& start_request) {
  if (core.on_io_thread()) {
    throw std::logic_error(
        "admit::redis::Client: a synchronous call from a callback would wait for itself");
  }
  using Result = std::pair<std::error_code, Reply>;
  auto promise = std::make_shared<std::promise<Result>>();
  auto future = promise->get_future();
  start_request([promise](std::error_code ec, Reply reply) {
    promise->set_value({ec, std::move(reply)});
  });
  auto [ec, reply] = future.get();
  if (ec) throw StoreUnavailable(reply.str);
  return std::move(reply);
}

}  // namespace

Client::Client(ClientOptions options)
    : core_(std::make_unique<detail::Core>(validated(std::move(options)))) {}

Client::~Client() { core_->shutdown(); }

void Client::async_command(const std::vector<std::string>& args, Callback cb) {
  start(*core_, views(args), -1, nullptr, std::move(cb));
}

void Client::async_command_for_key(std::string_view key, const std::vector<std::string>& args,
                                   Callback cb) {
  const int slot = core_->options().cluster ? key_slot(key) : -1;
  start(*core_, views(args), slot, nullptr, std::move(cb));
}

void Client::async_evalsha(const Script& script, const std::vector<std::string>& keys,
                           const std::vector<std::string>& argv, Callback cb) {
  // Before a SCRIPT LOAD returned the script's SHA1, a placeholder of its size: the node
  // loads the script first and writes the SHA1 over it (Connection::enqueue).
  static constexpr std::string_view kUnknownSha1 = "0000000000000000000000000000000000000000";
  const std::string* sha1 = script.data()->known_sha1();
  const std::string nkeys = std::to_string(keys.size());
  std::vector<std::string_view> args;
  args.reserve(3 + keys.size() + argv.size());
  args.push_back("EVALSHA");
  args.push_back(sha1 != nullptr ? std::string_view(*sha1) : kUnknownSha1);
  args.push_back(nkeys);
  args.insert(args.end(), keys.begin(), keys.end());
  args.insert(args.end(), argv.begin(), argv.end());
  const int slot = core_->options().cluster && !keys.empty() ? key_slot(keys.front()) : -1;
  start(*core_, args, slot, script.data(), std::move(cb), std::nullopt, sha1 == nullptr);
}

void Client::async_command_on(const Endpoint& node, const std::vector<std::string>& args,
                              Callback cb) {
  start(*core_, views(args), -1, nullptr, std::move(cb), node);
}

Reply Client::command_on(const Endpoint& node, const std::vector<std::string>& args) {
  return wait_for(*core_, [&](Callback cb) { async_command_on(node, args, std::move(cb)); });
}

Reply Client::command(const std::vector<std::string>& args) {
  return wait_for(*core_, [&](Callback cb) { async_command(args, std::move(cb)); });
}

Reply Client::command_for_key(std::string_view key, const std::vector<std::string>& args) {
  return wait_for(*core_, [&](Callback cb) { async_command_for_key(key, args, std::move(cb)); });
}

Reply Client::evalsha(const Script& script, const std::vector<std::string>& keys,
                      const std::vector<std::string>& argv) {
  return wait_for(*core_, [&](Callback cb) { async_evalsha(script, keys, argv, std::move(cb)); });
}

bool Client::connected() const {
  return core_->stats().ready_connections.load(std::memory_order_relaxed) > 0;
}

bool Client::on_io_thread() const { return core_->on_io_thread(); }

ClientStats Client::stats() const {
  const auto& s = core_->stats();
  auto get = [](const std::atomic<std::uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  ClientStats out;
  out.commands = get(s.commands);
  out.connects = get(s.connects);
  out.reconnects = get(s.reconnects);
  out.connect_failures = get(s.connect_failures);
  out.connection_losses = get(s.connection_losses);
  out.timeouts = get(s.timeouts);
  out.moved = get(s.moved);
  out.asked = get(s.asked);
  out.slot_map_loads = get(s.slot_map_loads);
  out.script_loads = get(s.script_loads);
  out.writes = get(s.writes);
  out.pending = get(s.pending);
  out.ready_connections = get(s.ready_connections);
  return out;
}

const ClientOptions& Client::options() const { return core_->options(); }

}  // namespace admit::redis
