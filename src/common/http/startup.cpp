#include "common/http/startup.hpp"

#include <pthread.h>

#include <charconv>
#include <cstdio>
#include <exception>
#include <stdexcept>

#include "admit/core/error.hpp"
#include "common/http/server.hpp"

namespace admit::http {

Startup::Startup(std::string program) : program_(std::move(program)) {
  raise_fd_limit();
  sigemptyset(&held_);
  sigaddset(&held_, SIGINT);
  sigaddset(&held_, SIGTERM);
  sigaddset(&held_, SIGHUP);
  holding_ = pthread_sigmask(SIG_BLOCK, &held_, nullptr) == 0;
}

Startup::~Startup() { release_signals(); }

void Startup::release_signals() {
  if (holding_) pthread_sigmask(SIG_UNBLOCK, &held_, nullptr);
  holding_ = false;
}

int Startup::fail(const std::string& message, int code) const {
  std::fprintf(stderr, "%s: %s\n", program_.c_str(), message.c_str());
  return code;
}

int Startup::run(const std::function<int()>& serve) const {
  try {
    return serve();
  } catch (const ListenError& e) {
    return fail(e.what(), kExitFailure);
  } catch (const std::invalid_argument& e) {
    return fail(e.what(), kExitUsage);
  } catch (const ValidationError& e) {
    return fail(e.what(), kExitUsage);
  } catch (const std::exception& e) {
    return fail(std::string("fatal: ") + e.what(), kExitFailure);
  }
}

std::string Startup::listening(const Server& server) {
  release_signals();
  std::string u = server.url();
  std::printf("listening on %s\n", u.c_str());
  std::fflush(stdout);
  return u;
}

bool split_listen(const std::string& s, std::string& host, std::uint16_t& port) {
  const auto colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == s.size()) return false;
  host = s.substr(0, colon);
  if (host.find(':') != std::string::npos && (host.front() != '[' || host.back() != ']')) {
    return false;  // a bare IPv6 address needs brackets
  }
  const char* first = s.data() + colon + 1;
  const char* last = s.data() + s.size();
  const auto [p, ec] = std::from_chars(first, last, port);
  return ec == std::errc() && p == last;
}

}  // namespace admit::http
