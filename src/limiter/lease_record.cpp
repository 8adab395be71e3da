#include "lease_record.hpp"

#include <boost/json.hpp>
#include <charconv>
#include <memory>
#include <utility>
#include <vector>

#include "admit/core/error.hpp"
#include "admit/core/limit_codec.hpp"

namespace admit::detail {

namespace json = boost::json;

namespace {

constexpr std::int64_t kRecordVersion = 1;

std::optional<ConfigSource> source_named(std::string_view s) {
  for (const ConfigSource c :
       {ConfigSource::discovered, ConfigSource::entity, ConfigSource::entity_default,
        ConfigSource::resource, ConfigSource::system}) {
    if (to_string(c) == s) return c;
  }
  return std::nullopt;
}

const json::value* field(const json::object& o, std::string_view name) {
  return o.if_contains(json::string_view(name.data(), name.size()));
}

std::optional<std::int64_t> int_field(const json::object& o, std::string_view name) {
  const json::value* v = field(o, name);
  if (v == nullptr || !v->is_int64()) return std::nullopt;
  return v->get_int64();
}

constexpr char kHex[] = "0123456789abcdef";

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

}  // namespace

namespace {

// The key part of a record (the same for every lease of the key, so made once per LeaseKey):
// {"resource":R,"entities":[...],"items":[[key index, source, limit], ...]}, each limit as
// limit_codec writes it (one by one: the limits of a chain may share names).
std::shared_ptr<const std::string> key_json(const LeaseKey& key) {
  std::shared_ptr<const std::string> cached = key.record_json.load(std::memory_order_acquire);
  if (cached) return cached;
  json::array items;
  for (const auto& it : key.items) {
    json::value limit = json::parse(encode_limits(std::span(&it.limit, 1)));
    items.push_back(
        json::array{it.key, json::string(to_string(it.source)), std::move(limit.as_array().at(0))});
  }
  json::array entities;
  for (const auto& e : key.entities) entities.emplace_back(e);
  json::object o;
  o["resource"] = key.resource;
  o["entities"] = std::move(entities);
  o["items"] = std::move(items);
  auto made = std::make_shared<const std::string>(json::serialize(o));
  key.record_json.store(made, std::memory_order_release);  // a racing thread makes the same
  return made;
}

void append_int(std::string& s, std::int64_t v) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  s.append(buf, r.ptr);
}

}  // namespace

std::string encode_lease_record(const LeaseKey& key, std::span<const RecordHeld> held, bool slots) {
  // {"v":1,"slots":B,"held":[[consumed, window_end], ...],"key":{...}}: the holdings written
  // here, the key part made once (key_json).
  const std::shared_ptr<const std::string> k = key_json(key);
  std::string s;
  s.reserve(40 + 24 * held.size() + k->size());
  s += R"({"v":)";
  append_int(s, kRecordVersion);
  s += slots ? R"(,"slots":true,"held":[)" : R"(,"slots":false,"held":[)";
  for (std::size_t i = 0; i < held.size(); ++i) {
    if (i > 0) s += ',';
    s += '[';
    append_int(s, held[i].consumed);
    s += ',';
    append_int(s, held[i].window_end);
    s += ']';
  }
  s += R"(],"key":)";
  s += *k;
  s += '}';
  return s;
}

std::optional<DecodedRecord> decode_lease_record(std::string_view data) {
  boost::system::error_code ec;
  const json::value v = json::parse(json::string_view(data.data(), data.size()), ec);
  if (ec || !v.is_object()) return std::nullopt;
  const json::object& o = v.get_object();
  if (int_field(o, "v") != kRecordVersion) return std::nullopt;
  const json::value* slots = field(o, "slots");
  const json::value* held = field(o, "held");
  const json::value* key = field(o, "key");
  if (slots == nullptr || !slots->is_bool() || held == nullptr || !held->is_array() ||
      key == nullptr || !key->is_object()) {
    return std::nullopt;
  }
  const json::object& ko = key->get_object();
  const json::value* resource = field(ko, "resource");
  const json::value* entities = field(ko, "entities");
  const json::value* items = field(ko, "items");
  if (resource == nullptr || !resource->is_string() || entities == nullptr ||
      !entities->is_array() || entities->get_array().empty() || items == nullptr ||
      !items->is_array() || items->get_array().size() != held->get_array().size()) {
    return std::nullopt;
  }
  DecodedRecord r;
  r.key = std::make_unique<LeaseKey>();
  r.key->resource = std::string(resource->get_string());
  for (const json::value& e : entities->get_array()) {
    if (!e.is_string()) return std::nullopt;
    r.key->entities.emplace_back(e.get_string());
  }
  r.slots = slots->get_bool();
  const json::array& list = items->get_array();
  for (std::size_t i = 0; i < list.size(); ++i) {
    const json::array* it = list[i].if_array();
    const json::array* h = held->get_array()[i].if_array();
    if (it == nullptr || it->size() != 3 || !(*it)[0].is_int64() || !(*it)[1].is_string() ||
        !(*it)[2].is_object() || h == nullptr || h->size() != 2 || !(*h)[0].is_int64() ||
        !(*h)[1].is_int64()) {
      return std::nullopt;
    }
    std::vector<Limit> decoded;
    try {
      decoded = decode_limits("[" + json::serialize((*it)[2]) + "]");
    } catch (const ValidationError&) {
      return std::nullopt;
    }
    const std::int64_t k = (*it)[0].get_int64();
    const std::optional<ConfigSource> source = source_named((*it)[1].get_string());
    if (k < 0 || static_cast<std::size_t>(k) >= r.key->entities.size() || !source ||
        decoded.size() != 1) {
      return std::nullopt;
    }
    r.key->items.push_back(
        LeaseKey::Item{std::move(decoded[0]), *source, static_cast<std::uint16_t>(k), nullptr});
    r.held.push_back(RecordHeld{(*h)[0].get_int64(), (*h)[1].get_int64()});
  }
  return r;
}

std::string lease_token(std::uint64_t id, std::string_view group) {
  std::string t(16, '0');
  for (int i = 15; i >= 0; --i, id >>= 4) t[static_cast<std::size_t>(i)] = kHex[id & 0xf];
  t += '.';
  for (const char c : group) {
    const auto u = static_cast<unsigned char>(c);
    t += kHex[u >> 4];
    t += kHex[u & 0xf];
  }
  return t;
}

std::optional<ParsedToken> parse_lease_token(std::string_view token) {
  if (token.size() < 19 || token.size() > 17 + 2 * 128 || token[16] != '.' ||
      token.size() % 2 == 0) {
    return std::nullopt;
  }
  ParsedToken p;
  for (std::size_t i = 0; i < 16; ++i) {
    const int v = hex_value(token[i]);
    if (v < 0) return std::nullopt;
    p.id = (p.id << 4) | static_cast<std::uint64_t>(v);
  }
  if (p.id == 0) return std::nullopt;
  for (std::size_t i = 17; i < token.size(); i += 2) {
    const int hi = hex_value(token[i]);
    const int lo = hex_value(token[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    p.group += static_cast<char>((hi << 4) | lo);
  }
  try {
    validate_name("group", p.group);
  } catch (const ValidationError&) {
    return std::nullopt;
  }
  return p;
}

}  // namespace admit::detail
