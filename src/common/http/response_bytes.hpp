// The bytes of a whole HTTP/1.x response (status line, header fields, body) in one buffer, so
// the server writes each response with one send(): Beast's serializer would gather a dozen
// buffers per response and walk them with buffer-sequence adaptors on every write.
#pragma once

#include <string>
#include <string_view>

#include "common/http/server.hpp"

namespace admit::http {

/// What format_response() needs beside the Response.
struct ResponseFraming {
  unsigned version = 11;        ///< 10 or 11: the request's HTTP version
  bool keep_alive = true;       ///< whether the connection stays open after this response
  bool head = false;            ///< the request was HEAD: the body's length, not its bytes
  std::string_view server;      ///< `Server` value; empty: none
  std::string_view request_id;  ///< `X-Request-Id` value; empty: none
};

/**
 * Replaces `out` with the response: "HTTP/1.1 <status> <reason>", `Server`, `X-Request-Id`,
 * `Content-Type` (r.content_type, if set), r.headers in order, r.fields as they are,
 * `Connection` (close on HTTP/1.1, keep-alive on HTTP/1.0, as framing.keep_alive asks),
 * `Content-Length` (none for 1xx, 204 and 304, which have no body), then the body. A header whose
 * name or value holds CR, LF or NUL, or whose name is empty, is left out (it could end the header
 * early: response splitting); `out` keeps its capacity, so a connection that reuses it allocates
 * nothing once it is large enough.
 */
void format_response(std::string& out, const Response& r, const ResponseFraming& framing);

}  // namespace admit::http
