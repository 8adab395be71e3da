// What every `admit` subcommand shares: its exit codes and how it prints a message.
#pragma once

#include <cstdio>
#include <string>
#include <string_view>

namespace admit::cli {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;  ///< the work failed (a store, a file, a write)
constexpr int kExitUsage = 2;    ///< bad flags or input

/// "admit COMMAND: LINE" on stderr.
inline void say(std::string_view command, const std::string& line) {
  std::fprintf(stderr, "admit %.*s: %s\n", static_cast<int>(command.size()), command.data(),
               line.c_str());
}

}  // namespace admit::cli
