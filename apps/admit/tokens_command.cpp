// `admit tokens [--model M | --encoding E] [--chat] [--json] [--ids] [FILE|-]`.
#include "tokens_command.hpp"

#include <admit/tokens.hpp>
#include <boost/json.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "cli_common.hpp"

namespace admit::cli {

namespace {

void say(const std::string& line) { cli::say("tokens", line); }

std::optional<std::string> read_input(const std::string& path) {
  if (path == "-") {
    std::ostringstream s;
    s << std::cin.rdbuf();
    return std::move(s).str();
  }
  std::ifstream f(path, std::ios::binary);
  if (!f) return std::nullopt;
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// A chat completion request body: its model (if any) and messages. Content given as an array of
// parts counts its text parts, joined; other parts (images, audio) are not counted.
struct ChatBody {
  std::string model;
  std::vector<std::string> texts;  // role, content, name of each message (kept alive here)
  std::vector<ChatMessage> messages;
};

std::string part_text(const boost::json::value& content) {
  if (content.is_string()) return std::string(content.get_string());
  std::string text;
  if (const auto* parts = content.if_array()) {
    for (const auto& part : *parts) {
      const auto* o = part.if_object();
      if (o == nullptr) continue;
      if (const auto* t = o->if_contains("text"); t != nullptr && t->is_string()) {
        text += t->get_string();
      }
    }
  }
  return text;  // null (an assistant message with tool calls): no text
}

ChatBody parse_chat(const std::string& input) {
  boost::json::error_code ec;
  const boost::json::value body = boost::json::parse(input, ec);
  if (ec) throw std::runtime_error("the input is not JSON: " + ec.message());
  const auto* o = body.if_object();
  if (o == nullptr) throw std::runtime_error("the input is not a JSON object");
  ChatBody chat;
  if (const auto* m = o->if_contains("model"); m != nullptr && m->is_string()) {
    chat.model = m->get_string();
  }
  const auto* messages = o->if_contains("messages");
  if (messages == nullptr || !messages->is_array()) {
    throw std::runtime_error("the input has no \"messages\" array");
  }
  // Three strings per message, reserved so that the views into them stay valid.
  chat.texts.reserve(messages->get_array().size() * 3);
  std::vector<bool> named;
  for (const auto& m : messages->get_array()) {
    const auto* msg = m.if_object();
    const auto* role = msg != nullptr ? msg->if_contains("role") : nullptr;
    if (role == nullptr || !role->is_string()) {
      throw std::runtime_error("a message without a string \"role\"");
    }
    chat.texts.emplace_back(role->get_string());
    const auto* content = msg->if_contains("content");
    chat.texts.push_back(content != nullptr ? part_text(*content) : std::string());
    const auto* name = msg->if_contains("name");
    named.push_back(name != nullptr && name->is_string());
    chat.texts.push_back(named.back() ? std::string(name->get_string()) : std::string());
  }
  for (std::size_t i = 0; i < named.size(); ++i) {
    ChatMessage m{.role = chat.texts[3 * i], .content = chat.texts[3 * i + 1]};
    if (named[i]) m.name = chat.texts[3 * i + 2];
    chat.messages.push_back(m);
  }
  return chat;
}

}  // namespace

CLI::App* add_tokens_command(CLI::App& app, TokensOptions& options) {
  CLI::App* cmd = app.add_subcommand(
      "tokens",
      "Count the tokens of a text offline, exactly as OpenAI's tiktoken does (o200k_base, "
      "cl100k_base; special tokens count as text). A model without a known encoding gets an "
      "o200k_base estimate. Prints the count, or with --json "
      "{\"tokens\":N,\"encoding\":\"o200k_base\",\"estimate\":false} (docs/tokens.md)");
  CLI::Option* model =
      cmd->add_option("--model", options.model,
                      "count for this model: its tiktoken encoding (gpt-4o, gpt-4, o3, ...), or "
                      "an estimate for other families");
  cmd->add_option("--encoding", options.encoding, "o200k_base (the default) or cl100k_base")
      ->excludes(model);
  cmd->add_flag("--chat", options.chat,
                "the input is a chat completion request body (JSON): count its messages with "
                "OpenAI's overhead (3 per message, 1 per name, 3 for the reply); its \"model\" "
                "is used when neither --model nor --encoding is given");
  cmd->add_flag("--json", options.json, "print one JSON object");
  cmd->add_flag("--ids", options.ids, "print the token ids (with --json: an \"ids\" array)");
  cmd->add_option("input", options.input, "the text file to count, or - for stdin (the default)")
      ->capture_default_str();
  return cmd;
}

int run_tokens(const TokensOptions& options) {
  std::optional<Encoding> encoding;
  if (!options.encoding.empty()) {
    encoding = parse_encoding(options.encoding);
    if (!encoding) {
      say("error: unknown encoding '" + options.encoding +
          "': o200k_base or cl100k_base (see admit tokens --help)");
      return kExitUsage;
    }
  }
  if (options.chat && options.ids) {
    say("error: --ids counts a text, not --chat messages (see admit tokens --help)");
    return kExitUsage;
  }
  const std::optional<std::string> input = read_input(options.input);
  if (!input) {
    say("error: cannot read '" + options.input + "'");
    return kExitFailure;
  }

  TokenCount count;
  std::vector<std::uint32_t> ids;
  std::string model = options.model;
  try {
    if (options.chat) {
      const ChatBody chat = parse_chat(*input);
      if (model.empty() && !encoding && !chat.model.empty()) model = chat.model;
      if (!model.empty()) {
        count = count_chat_tokens(chat.messages, model);
      } else {
        const Encoding e = encoding.value_or(Encoding::o200k_base);
        count = {.tokens = count_chat_tokens(chat.messages, e), .encoding = e};
      }
    } else if (!model.empty()) {
      count = count_tokens(*input, model);
      if (options.ids) ids = encode(*input, count.encoding);
    } else {
      const Encoding e = encoding.value_or(Encoding::o200k_base);
      count = {.tokens = count_tokens(*input, e), .encoding = e};
      if (options.ids) ids = encode(*input, e);
    }
  } catch (const std::exception& e) {
    say(std::string("error: ") + e.what());
    return kExitFailure;
  }
  if (count.estimate) {
    say("note: '" + model + "' has no known encoding: " + std::to_string(count.tokens) +
        " is an estimate (o200k_base)");
  }

  if (options.json) {
    boost::json::object out;
    out["tokens"] = count.tokens;
    out["encoding"] = to_string(count.encoding);
    out["estimate"] = count.estimate;
    if (options.ids) {
      boost::json::array a;
      for (const std::uint32_t id : ids) a.emplace_back(id);
      out["ids"] = std::move(a);
    }
    std::cout << boost::json::serialize(out) << "\n";
  } else if (options.ids) {
    std::string line;
    for (const std::uint32_t id : ids) {
      if (!line.empty()) line += ' ';
      line += std::to_string(id);
    }
    std::cout << line << "\n";
  } else {
    std::cout << count.tokens << "\n";
  }
  return kExitOk;
}

}  // namespace admit::cli
