// admit::redis::Client: an asynchronous, pipelined Redis client (standalone or Redis Cluster)
// over Boost.Asio; hiredis only encodes commands and parses replies. RedisStore runs on it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

namespace admit::redis {

/// One RESP2 reply. Server error replies are values of type `error`, never exceptions.
struct Reply {
  enum class Type : std::uint8_t { nil, string, status, error, integer, array };

  Type type = Type::nil;
  std::string str;           ///< string, status, error: the payload ("ERR unknown ..." for errors)
  std::int64_t integer = 0;  ///< integer
  std::vector<Reply> elements;  ///< array

  bool is_nil() const { return type == Type::nil; }
  bool is_string() const { return type == Type::string; }
  bool is_status() const { return type == Type::status; }
  bool is_error() const { return type == Type::error; }
  bool is_integer() const { return type == Type::integer; }
  bool is_array() const { return type == Type::array; }
  /// The first word of an error reply ("MOVED", "NOSCRIPT", "WRONGTYPE"); empty otherwise.
  std::string_view error_code() const;

  /// An error reply with `message` as its text (what failed requests carry; see Callback).
  static Reply error(std::string message);
};

/// "nil", "string", "status", "error", "integer", "array".
std::string_view to_string(Reply::Type type);
/// A one-line rendering for logs and test output: `"abc"`, `OK`, `(integer) 3`,
/// `(error) ERR x`, `[(integer) 1, "a", nil]`.
std::string to_string(const Reply& reply);

/// Why a request got no reply from the server. The category is `redis::error_category()`.
enum class Errc {
  timeout = 1,          ///< no reply within ClientOptions::command_timeout
  connection_failed,    ///< could not connect (TLS handshake, SELECT failed); also during backoff
  connection_lost,      ///< the connection broke with the request sent: it may have run
  auth_failed,          ///< the server refused AUTH
  protocol_error,       ///< the server sent something that is not RESP, or an unexpected reply
  too_many_redirects,   ///< more than ClientOptions::max_redirects MOVED/ASK in a row
  cluster_unavailable,  ///< no slot map could be loaded, or the slot has no node
  overloaded,           ///< more than ClientOptions::max_pending requests were pending
  shutdown,             ///< the client was destroyed before the request completed
};
const std::error_category& error_category() noexcept;
std::error_code make_error_code(Errc e) noexcept;

/// A server address. IPv6 literals go without brackets ("::1").
struct Endpoint {
  std::string host;
  std::uint16_t port = 6379;

  /// "host:port", or "[host]:port" for an IPv6 literal.
  std::string to_string() const;
  friend bool operator==(const Endpoint&, const Endpoint&) = default;
};

/// TLS for every connection of a client (rediss://, rediss+cluster://): Boost.Asio SSL over
/// OpenSSL, TLS 1.2 or later. By default the server's certificate must chain to a trusted CA
/// (the system's CA store, or `ca_file`) and name the host connected to (a DNS name, or an IP
/// address for an IP literal); the host name is also sent as SNI (not for IP literals).
struct TlsOptions {
  bool enabled = false;  ///< false: plain TCP; the other fields must then be empty/default
  /// PEM file of the CA certificates to trust instead of the system's store (URL: `ca=`).
  std::string ca_file;
  /// Client certificate (PEM, may hold the chain) and its private key (PEM, unencrypted) for
  /// servers that verify clients (redis-server's `tls-auth-clients yes`, its default). Both or
  /// neither (URL: `cert=`, `key=`).
  std::string cert_file;
  std::string key_file;
  /// false: accept any certificate for any name (URL: `verify=none`). For tests only: it
  /// lets anyone on the path read and change the traffic.
  bool verify = true;
  /// The name the server's certificate must carry, also sent as SNI; empty: each node's host
  /// (URL: `server_name=`). For a server reached by an address its certificate does not name.
  std::string server_name;

  friend bool operator==(const TlsOptions&, const TlsOptions&) = default;
};

/// Everything a Client is configured with. Validated by the Client constructor, which throws
/// ValidationError (admit/core/error.hpp) naming the field.
struct ClientOptions {
  /// Standalone: the server (only the first entry is used). Cluster: seed nodes, asked in
  /// turn for the slot map.
  std::vector<Endpoint> seeds;
  std::string username;  ///< AUTH username (Redis 6 ACL); empty: AUTH with the password alone
  std::string password;  ///< empty: no AUTH
  int db = 0;            ///< SELECTed on every connection when not 0; must be 0 in cluster mode
  bool cluster = false;  ///< Redis Cluster: route by key slot, follow MOVED and ASK
  /// Bounds resolving, connecting, the TLS handshake, AUTH and SELECT of one attempt.
  std::chrono::milliseconds connect_timeout{2000};
  /// Bounds a request from submission to reply, queueing and redirects included.
  std::chrono::milliseconds command_timeout{1000};
  /// Requests written to one connection and not yet answered; more wait in the client.
  std::size_t max_in_flight = 1024;
  /// Requests accepted and not completed, all connections together; beyond it, new requests
  /// fail at once with Errc::overloaded.
  std::size_t max_pending = 1 << 20;
  int max_redirects = 5;  ///< MOVED/ASK followed per request before Errc::too_many_redirects
  /// After a failed connection attempt new requests to that node fail at once (no connect)
  /// for this long, doubling per consecutive failure up to reconnect_backoff_max.
  std::chrono::milliseconds reconnect_backoff{100};
  std::chrono::milliseconds reconnect_backoff_max{2000};
  /// TLS on every connection (rediss://). The files are read by the constructor: a missing
  /// or invalid one throws ValidationError naming the field ("tls.ca_file", ...).
  TlsOptions tls;
};

/**
 * Parses a server URL:
 *   - "redis://[[user]:password@]host[:port][/db]": one server (port 6379 by default; user
 *     and password percent-decoded; IPv6 hosts in brackets);
 *   - "rediss://...[?tls parameters]": the same over TLS (tls.enabled);
 *   - "redis+cluster://[[user]:password@]host:port,host:port,...": Redis Cluster seeds
 *     (cluster = true; see parse_endpoints), "rediss+cluster://...[?tls parameters]" over TLS.
 * TLS parameters (rediss only; values percent-decoded; each at most once): `ca=FILE`,
 * `cert=FILE`, `key=FILE`, `verify=full|none` (default full), `server_name=NAME` (TlsOptions).
 * Only `seeds`, `cluster`, `username`, `password`, `db` and `tls` are set; the rest keep their
 * defaults.
 * @throws ValidationError for another scheme, a missing host, a bad port or db, a query on
 *         redis:// or an unknown or repeated parameter, or a fragment.
 */
ClientOptions parse_url(std::string_view url);

/// "redis://host:port/db", "rediss://host:port/db" or "redis+cluster://host:port,..." /
/// "rediss+cluster://...": the address without credentials or parameters (for logs).
std::string display_url(const ClientOptions& options);

/**
 * Parses a seed list "host1:port1,host2:port2" ("[::1]:7000" for IPv6; spaces around entries
 * are ignored).
 * @throws ValidationError for an empty list, a missing port or a bad port.
 */
std::vector<Endpoint> parse_endpoints(std::string_view list);

/// The Redis Cluster slot of a key: CRC16/XMODEM mod 16384 of the key, or of the part between
/// the first '{' and the next '}' when that part is not empty ("{user1}.a", "{user1}.b" share
/// a slot).
std::uint16_t key_slot(std::string_view key) noexcept;

/// A Lua script for EVALSHA. Its SHA1 is not computed here: the first EVALSHA of it loads it
/// (SCRIPT LOAD) and keeps the SHA1 the server returns, for every client and node. Cheap to
/// copy (copies share the source and the SHA1).
class Script {
 public:
  explicit Script(std::string source);
  const std::string& source() const;
  /// 40 lower-case hex digits, as SCRIPT LOAD returned them; empty before any client loaded
  /// this script (or a copy of it).
  const std::string& sha1() const;

  struct Data;  ///< opaque: source and SHA1
  const std::shared_ptr<const Data>& data() const { return data_; }

 private:
  std::shared_ptr<const Data> data_;
};

/// Counters since construction. Each field is read atomically; together they are a snapshot
/// only when the client is idle.
struct ClientStats {
  std::uint64_t commands = 0;           ///< requests accepted (async and sync)
  std::uint64_t connects = 0;           ///< connections established (AUTH/SELECT done)
  std::uint64_t reconnects = 0;         ///< of those, to a node connected before
  std::uint64_t connect_failures = 0;   ///< failed connection attempts (incl. AUTH)
  std::uint64_t connection_losses = 0;  ///< established connections that broke or timed out
  std::uint64_t timeouts = 0;           ///< requests failed with Errc::timeout
  std::uint64_t moved = 0;              ///< MOVED redirects followed
  std::uint64_t asked = 0;              ///< ASK redirects followed
  std::uint64_t slot_map_loads = 0;     ///< slot maps loaded (CLUSTER SLOTS)
  std::uint64_t script_loads = 0;       ///< SCRIPT LOADs sent (first use of a script, NOSCRIPT)
  std::uint64_t writes = 0;             ///< socket writes (each carries one or more requests)
  std::uint64_t pending = 0;            ///< requests accepted and not completed, now
  std::uint64_t ready_connections = 0;  ///< connections usable now
};

/**
 * Completion of an asynchronous request; called exactly once, on the client's I/O thread.
 * @param ec empty when the server answered: `reply` is its reply, error replies included.
 *        Otherwise the request failed (an Errc) and `reply` is an error Reply whose `str`
 *        says why, e.g. "AUTH failed on 127.0.0.1:6379: WRONGPASS invalid username-password
 *        pair or user is disabled.".
 */
using Callback = std::function<void(std::error_code ec, Reply reply)>;

namespace detail {
class Core;
}  // namespace detail

/**
 * A Redis client: one connection per node, shared by every request through pipelining.
 *
 * Thread-safe: any thread may call any member (except the destructor) concurrently. The
 * client owns one I/O thread; every Callback runs on it, one at a time, so callbacks must not
 * block, must not call the synchronous members (they throw std::logic_error there), and must
 * not destroy the client. An exception thrown by a callback is caught and ignored.
 *
 * Connections are opened lazily by the first request for a node and reopened by the next
 * request after they break. Requests issued from one thread to one node are sent, and
 * answered, in the order they were issued (except one that is sent again after MOVED, ASK
 * or NOSCRIPT, or an EVALSHA that waited for its script's first SCRIPT LOAD: it goes behind
 * what was queued meanwhile).
 *
 * The destructor fails every pending request with Errc::shutdown (on the I/O thread, before
 * it returns) and joins the thread; no callback runs after it returns.
 */
class Client {
 public:
  /// @throws ValidationError if `options` are invalid (nothing connects before the first request).
  explicit Client(ClientOptions options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  /**
   * Sends a command, e.g. {"SET", "k", "v"}. In cluster mode a command without a key goes to
   * one of the masters (rotating): use it only for commands any node can answer.
   * @param args the command and its arguments (binary-safe); encoded before returning.
   * @throws ValidationError if `args` is empty (Redis would not answer it);
   *         std::length_error if the command exceeds 512 MiB.
   */
  void async_command(const std::vector<std::string>& args, Callback cb);
  /// As async_command; in cluster mode routed to the node serving key_slot(key).
  void async_command_for_key(std::string_view key, const std::vector<std::string>& args,
                             Callback cb);
  /**
   * EVALSHA script.sha1() with `keys` and `argv`, routed by keys[0]. While the SHA1 is not
   * known yet, the node first loads the script (SCRIPT LOAD, shared by concurrent requests)
   * and the request is sent with the SHA1 it returns. On NOSCRIPT the script is loaded on
   * that node the same way and the request is sent again, once. A script that does not
   * compile yields the SCRIPT LOAD error reply.
   */
  void async_evalsha(const Script& script, const std::vector<std::string>& keys,
                     const std::vector<std::string>& argv, Callback cb);

  /**
   * Sends a command to one node, whatever the keys: for commands about that node (SCAN,
   * DBSIZE, INFO). Standalone: the server. No redirect is followed.
   */
  void async_command_on(const Endpoint& node, const std::vector<std::string>& args, Callback cb);

  /**
   * Synchronous forms: wait for the reply and return it (error replies included).
   * @throws StoreUnavailable (admit/core/error.hpp) when the request failed (any Errc); the
   *         message is the failure's text.
   * @throws std::logic_error when called from a callback (it would wait for itself).
   */
  Reply command(const std::vector<std::string>& args);
  Reply command_for_key(std::string_view key, const std::vector<std::string>& args);
  Reply command_on(const Endpoint& node, const std::vector<std::string>& args);
  Reply evalsha(const Script& script, const std::vector<std::string>& keys,
                const std::vector<std::string>& argv);

  /// True when at least one connection is established and usable.
  bool connected() const;
  /// True on the client's I/O thread (inside a callback), where a synchronous call would
  /// wait for itself: those throw std::logic_error there.
  bool on_io_thread() const;
  ClientStats stats() const;
  const ClientOptions& options() const;

 private:
  std::unique_ptr<detail::Core> core_;
};

}  // namespace admit::redis

template <>
struct std::is_error_code_enum<admit::redis::Errc> : std::true_type {};
