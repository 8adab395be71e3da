#include "lease_record.hpp"

#include <boost/json.hpp>
#include <charconv>
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

std::string encode_lease_record(const LeaseKey& key, std::span<const RecordHeld> held, bool slots) {
  // Each item: [key index, source, consumed, window_end, the limit as limit_codec writes it]
  // (one by one: the limits of a chain may share names).
  json::array items;
  for (std::size_t i = 0; i < key.items.size(); ++i) {
    const auto& it = key.items[i];
    json::value limit = json::parse(encode_limits(std::span(&it.limit, 1)));
    items.push_back(json::array{it.key, json::string(to_string(it.source)), held[i].consumed,
                                held[i].window_end, std::move(limit.as_array().at(0))});
  }
  json::array entities;
  for (const auto& e : key.entities) entities.emplace_back(e);
  json::object o;
  o["v"] = kRecordVersion;
  o["resource"] = key.resource;
  o["entities"] = std::move(entities);
  o["slots"] = slots;
  o["items"] = std::move(items);
  return json::serialize(o);
}

std::optional<DecodedRecord> decode_lease_record(std::string_view data) {
  boost::system::error_code ec;
  const json::value v = json::parse(json::string_view(data.data(), data.size()), ec);
  if (ec || !v.is_object()) return std::nullopt;
  const json::object& o = v.get_object();
  if (int_field(o, "v") != kRecordVersion) return std::nullopt;
  const json::value* resource = field(o, "resource");
  const json::value* entities = field(o, "entities");
  const json::value* slots = field(o, "slots");
  const json::value* items = field(o, "items");
  if (resource == nullptr || !resource->is_string() || entities == nullptr ||
      !entities->is_array() || entities->get_array().empty() || slots == nullptr ||
      !slots->is_bool() || items == nullptr || !items->is_array()) {
    return std::nullopt;
  }
  DecodedRecord r;
  r.key = std::make_shared<LeaseKey>();
  r.key->resource = std::string(resource->get_string());
  for (const json::value& e : entities->get_array()) {
    if (!e.is_string()) return std::nullopt;
    r.key->entities.emplace_back(e.get_string());
  }
  r.slots = slots->get_bool();
  const json::array& list = items->get_array();
  for (std::size_t i = 0; i < list.size(); ++i) {
    const json::array* it = list[i].if_array();
    if (it == nullptr || it->size() != 5 || !(*it)[0].is_int64() || !(*it)[1].is_string() ||
        !(*it)[2].is_int64() || !(*it)[3].is_int64() || !(*it)[4].is_object()) {
      return std::nullopt;
    }
    std::vector<Limit> decoded;
    try {
      decoded = decode_limits("[" + json::serialize((*it)[4]) + "]");
    } catch (const ValidationError&) {
      return std::nullopt;
    }
    const std::int64_t k = (*it)[0].get_int64();
    const std::optional<ConfigSource> source = source_named((*it)[1].get_string());
    if (k < 0 || static_cast<std::size_t>(k) >= r.key->entities.size() || !source) {
      return std::nullopt;
    }
    r.key->items.push_back(
        LeaseKey::Item{std::move(decoded.at(0)), *source, static_cast<std::uint16_t>(k), nullptr});
    r.held.push_back(RecordHeld{(*it)[2].get_int64(), (*it)[3].get_int64()});
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
