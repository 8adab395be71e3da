// `admit tokens`: counts the tokens of a text file or stdin offline, with tiktoken's encodings
// (admit/tokens.hpp, docs/tokens.md).
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace admit::cli {

struct TokensOptions {
  std::string model;     // --model: its encoding, or an o200k_base estimate
  std::string encoding;  // --encoding: o200k_base (the default) or cl100k_base
  std::string input = "-";
  bool json = false;  // {"tokens":N,"encoding":"...","estimate":false}
  bool ids = false;   // the token ids
  bool chat = false;  // the input is a chat completion request body: its messages
};

/// Adds the `tokens` subcommand to `app`, filling `options` when it is parsed.
CLI::App* add_tokens_command(CLI::App& app, TokensOptions& options);

/// Runs `admit tokens`: prints the count (or the JSON line, or the ids) on stdout.
/// @return 0 done; 1 the input could not be read or parsed; 2 a bad command line.
int run_tokens(const TokensOptions& options);

}  // namespace admit::cli
