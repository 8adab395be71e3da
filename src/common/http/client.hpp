// admit_http's HTTP/1.1 client, for forwarding requests to LLM providers (Boost.Beast over
// Asio and OpenSSL, none of which shows here). It owns the transport: resolving, connecting,
// TLS (verification against the system store or a CA file, host name check, SNI), a pool of
// keep-alive connections per origin, timeouts, the header and body limits, and streaming the
// response body piece by piece with back-pressure. docs/http-client.md describes it.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace boost::asio {
class io_context;
}

namespace admit::http {

struct ClientOptions {
  /// The client's own io threads (it owns an io_context), >= 1. Not used by a client made on
  /// the caller's io_context (Client(ClientOptions, io_context&)).
  int threads = 1;
  std::string ca_file;      ///< PEM CA bundle; empty: the system store (set_default_verify_paths)
  bool verify_peer = true;  ///< false only for an explicit opt-out: no chain, no host name check
  /// Pooled keep-alive connections kept per scheme + host + port; 0: no pooling.
  std::size_t max_idle_per_origin = 64;
  /// Resolving, connecting and the TLS handshake together.
  std::chrono::milliseconds connect_timeout{10000};
  /// A pooled connection unused this long is closed.
  std::chrono::milliseconds idle_timeout{60000};
  /// No progress for this long while writing the request or reading a response header or a
  /// body piece -> an error. Not counted while the caller holds back a resume().
  std::chrono::milliseconds read_timeout{300000};
  /// The response header. A chunk header or the trailer may take this plus 64 KiB.
  std::size_t header_limit = 64 * 1024;
  std::size_t body_limit = 64 * 1024 * 1024;  ///< the response body in total; beyond -> an error
};

/// Where requests go: a scheme, host and port, and a path prefix.
struct Origin {
  bool tls = false;
  std::string host;  ///< a DNS name or an IP address (IPv6 without brackets)
  std::uint16_t port = 0;
  std::string base_path;  ///< "" or "/v1" (no trailing '/')
};

/// "https://api.openai.com/v1" -> {true, "api.openai.com", 443, "/v1"}; "http://[::1]:8080"
/// -> {false, "::1", 8080, ""}. @throws std::invalid_argument (naming the URL and why) for
/// anything but an http or https URL with a host, an optional port and path, and no user
/// info, query or fragment.
Origin parse_base_url(std::string_view url);

/// `origin.base_path` + `path_and_query` (which must start with '/'): the target of a request.
std::string join_target(const Origin& origin, std::string_view path_and_query);

struct ClientRequest {
  std::string method;  ///< "POST", "GET", ...
  Origin origin;
  std::string target;  ///< path and query, base_path included (see join_target)
  /// Sent in this order after Host. Host, Content-Length and Transfer-Encoding given here are
  /// dropped: the client sets them (Content-Length for a body, or for POST, PUT and PATCH).
  /// `Connection: close` here keeps the connection out of the pool.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

struct ClientResponseHead {
  unsigned status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  ///< as received, in order
};

/// How the client reports one call. Every handler runs on one of the client's io threads (or
/// of the threads running the io_context it was given), one at a time for a call. A handler that
/// throws ends the call (its connection is closed) with on_done("handler threw: ..."); an exception
/// from on_done is dropped.
struct CallHandlers {
  /// Once, before any data (interim 1xx responses are skipped).
  std::function<void(ClientResponseHead)> on_head;
  /// A piece of the body as it arrives (chunked encoding decoded). Nothing more happens for
  /// this call (no read, no on_data, no on_done except by cancel()) until `resume` is called;
  /// `resume` may be called from any thread, more than once (the later calls do nothing).
  std::function<void(std::string data, std::function<void()> resume)> on_data;
  /// Once, last: "" when the body ended cleanly, else why (see docs/http-client.md).
  std::function<void(std::string error)> on_done;
};

/// One request in flight. Dropping it does not cancel the request.
class Call {
 public:
  /// Closes the call's connection (it never returns to the pool) and ends the call with
  /// on_done("cancelled"), unless it has ended already. Thread-safe, idempotent.
  void cancel();

  struct State;  // the call's shared state (client.cpp)
  explicit Call(std::shared_ptr<State> state) : state_(std::move(state)) {}

 private:
  std::shared_ptr<State> state_;
};

struct ClientStats {
  std::uint64_t opened = 0;   ///< connections opened (TCP connected; TLS follows)
  std::uint64_t reused = 0;   ///< requests sent on a pooled connection
  std::uint64_t retried = 0;  ///< requests retried on a fresh connection
  std::size_t open_now = 0;   ///< connections open now, busy or idle
  std::size_t idle_now = 0;   ///< of which in the pool
};

class Client {
 public:
  /// Starts options.threads io threads. @throws std::invalid_argument for a bad option or a
  /// ca_file that cannot be read.
  explicit Client(ClientOptions options);
  /// A client with no thread of its own: its connections and handlers run on `io`, which the
  /// caller runs (options.threads is not used). Run by one thread, `io` then carries the
  /// calls with no hand-off between threads: a caller that starts calls and takes their
  /// answers on that thread never waits for another (what admitd's gateway does). `io` must
  /// outlive the Client; the connections' last pieces may run on it after the Client is gone.
  Client(ClientOptions options, boost::asio::io_context& io);
  /// Cancels every call in flight (each gets on_done("cancelled")) and closes the pooled
  /// connections; a client with its own threads waits for that and joins them, one on the
  /// caller's io_context only posts it there (its on_done handlers run when `io` runs them).
  /// Must not run concurrently with start().
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  /// Sends `request` and reports the response through `handlers`. Never throws for a bad
  /// request: on_done gets "invalid request: ...". Thread-safe.
  std::shared_ptr<Call> start(ClientRequest request, CallHandlers handlers);

  /// Thread-safe.
  ClientStats stats() const;

  struct Impl;  // client.cpp

 private:
  std::shared_ptr<Impl> impl_;  // shared with its connections and calls
};

}  // namespace admit::http
