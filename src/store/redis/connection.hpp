// One node's connection: a socket (plain TCP, or TLS when the client's options say so) that is
// (re)opened on demand, a FIFO of requests waiting to be written, a FIFO of requests written
// and awaiting their replies. I/O thread only.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/ssl/verify_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core.hpp"
#include "resp.hpp"

namespace admit::redis::detail {

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(Core& core, Endpoint endpoint);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  const Endpoint& endpoint() const { return endpoint_; }
  const std::string& name() const { return name_; }
  bool ready() const { return state_ == State::ready; }

  /// Queues a request: connects first if needed, or fails it at once during backoff. An
  /// EVALSHA whose script's SHA1 is still unknown waits for load_script() first.
  void enqueue(RequestPtr req);
  /// Loads `req`'s script on this node (one SCRIPT LOAD for all requests that need it
  /// meanwhile), learns its SHA1 from the reply, then sends `req` (again): for an EVALSHA
  /// before the SHA1 is known, and after NOSCRIPT.
  void load_script(RequestPtr req);
  /// Fails requests whose deadline passed (a written one breaks the connection: the replies
  /// that follow would be out of step) and returns the earliest deadline still pending.
  Clock::time_point sweep(Clock::time_point now);
  /// Fails everything with Errc::shutdown and closes for good.
  void shutdown();

 private:
  // connecting: resolving, TCP connect and (TLS) the TLS handshake; handshaking: AUTH,
  // SELECT (TLS: or a PING) sent, waiting for their replies.
  enum class State { idle, connecting, handshaking, ready, closed };
  enum class Kind { request, discard, handshake };
  struct InFlight {
    RequestPtr req;  // null for discard and handshake entries
    Kind kind = Kind::request;
    Errc handshake_error = Errc::auth_failed;
    const char* handshake_step = "";  // "AUTH", "SELECT", "PING"
  };
  using TlsStream = boost::asio::ssl::stream<boost::asio::ip::tcp::socket>;

  /// The TCP socket of the current attempt (TLS: the one under the TLS stream).
  boost::asio::ip::tcp::socket& tcp_socket() { return tls_ ? tls_->next_layer() : socket_; }
  void start_connect();
  void on_connected(std::uint64_t gen, const boost::system::error_code& ec);
  void on_tls_handshake(std::uint64_t gen, const boost::system::error_code& ec);
  /// TLS certificate check (verify=full): the chain, then the name `host`.
  bool verify_certificate(const std::string& host, bool preverified,
                          boost::asio::ssl::verify_context& ctx);
  /// Connected (and TLS established): starts reading, sends AUTH and SELECT.
  void start_session();
  void on_ready();
  void start_read();
  void start_write();
  void on_read(std::uint64_t gen, const boost::system::error_code& ec, std::size_t n);
  void dispatch(InFlight entry, Reply reply);
  void schedule_flush();
  void flush();
  void on_written(std::uint64_t gen, const boost::system::error_code& ec);
  /// A connection attempt failed (connect, AUTH, SELECT): back off, fail what waits.
  void connect_failed(Errc e, const std::string& why);
  /// An established connection broke: fail what was sent, keep what was not.
  void lost(Errc e, const std::string& why, Clock::time_point now);
  void close_socket();
  void on_script_loaded(const std::shared_ptr<const Script::Data>& script, std::error_code ec,
                        const Reply& reply);

  Core& core_;
  const Endpoint endpoint_;
  const std::string name_;
  boost::asio::ip::tcp::socket socket_;  // plain TCP
  // TLS: a new stream (with its own socket) per attempt. Every handler of an operation on it
  // holds it (a TLS operation still uses the stream after its socket was closed), so closing
  // drops this pointer and the stream goes when the last aborted handler has run.
  std::shared_ptr<TlsStream> tls_;
  std::string tls_verify_error_;  // why verify_certificate() refused, for the message
  bool tls_handshaking_ = false;  // the TLS handshake is under way (for the timeout's message)
  boost::asio::ip::tcp::resolver resolver_;
  boost::asio::steady_timer connect_timer_;
  State state_ = State::idle;
  std::uint64_t gen_ = 0;  // bumped per attempt and on close: stale handlers compare it
  bool was_connected_ = false;

  std::deque<RequestPtr> waiting_;
  std::deque<InFlight> in_flight_;
  int handshake_left_ = 0;
  std::string write_buf_;
  bool writing_ = false;
  bool flush_posted_ = false;
  std::vector<char> read_buf_;
  ReplyReader reader_;

  int failures_ = 0;  // consecutive failed attempts
  Clock::time_point retry_at_{};
  Errc last_errc_ = Errc::connection_failed;
  std::string last_error_;

  // Requests waiting for a SCRIPT LOAD on this node, by script (the load's callback holds
  // the script, so its address is not reused meanwhile).
  std::unordered_map<const Script::Data*, std::vector<RequestPtr>> script_waiters_;
};

}  // namespace admit::redis::detail
