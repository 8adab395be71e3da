// RedisStore's admin operations: namespaces (open, reset), prune and size, which SCAN every
// master for the keys under the prefix. A namespace's keys (namespace_pattern) include its
// durable lease records; the usage keys (usage_pattern) do not.
#include <algorithm>
#include <future>
#include <memory>
#include <mutex>

#include "admit/core/error.hpp"
#include "key_codec.hpp"
#include "script_codec.hpp"
#include "store_impl.hpp"

namespace admit {

namespace {

constexpr std::size_t kScanCount = 1000;

}  // namespace

std::vector<redis::Endpoint> RedisStore::Impl::masters() {
  if (!o.client.cluster) return {o.client.seeds.at(0)};
  const redis::Reply r = client.command({"CLUSTER", "SLOTS"});
  if (!r.is_array()) throw StoreUnavailable("CLUSTER SLOTS: " + redis::to_string(r));
  std::vector<redis::Endpoint> out;
  for (const auto& range : r.elements) {
    if (!range.is_array() || range.elements.size() < 3 || !range.elements[2].is_array() ||
        range.elements[2].elements.size() < 2) {
      continue;
    }
    const auto& node = range.elements[2].elements;
    redis::Endpoint ep{node[0].str, static_cast<std::uint16_t>(node[1].integer)};
    if (ep.host.empty()) ep.host = o.client.seeds.at(0).host;
    if (std::find(out.begin(), out.end(), ep) == out.end()) out.push_back(ep);
  }
  return out;
}

std::vector<std::string> RedisStore::Impl::scan(const std::string& pattern) {
  std::vector<std::string> keys;
  for (const auto& ep : masters()) {
    std::string cursor = "0";
    do {
      const redis::Reply r = client.command_on(
          ep, {"SCAN", cursor, "MATCH", pattern, "COUNT", std::to_string(kScanCount)});
      if (!r.is_array() || r.elements.size() != 2 || !r.elements[1].is_array()) {
        throw StoreUnavailable("SCAN on " + ep.to_string() + ": " + redis::to_string(r));
      }
      cursor = r.elements[0].str;
      for (const auto& k : r.elements[1].elements) keys.push_back(k.str);
    } while (cursor != "0");
  }
  return keys;
}

std::vector<redis::Reply> RedisStore::Impl::for_each_key(
    const std::vector<std::string>& keys,
    const std::function<std::vector<std::string>(const std::string&)>& command) {
  std::vector<redis::Reply> replies(keys.size());
  if (keys.empty()) return replies;
  struct State {
    std::mutex mu;
    std::size_t left;
    std::string error;
    std::promise<void> done;
  };
  auto st = std::make_shared<State>();
  st->left = keys.size();
  for (std::size_t i = 0; i < keys.size(); ++i) {
    client.async_command_for_key(keys[i], command(keys[i]),
                                 [st, &replies, i](std::error_code ec, redis::Reply r) {
                                   std::lock_guard g(st->mu);
                                   if (ec && st->error.empty()) st->error = r.str;
                                   replies[i] = std::move(r);
                                   if (--st->left == 0) st->done.set_value();
                                 });
  }
  st->done.get_future().wait();
  if (!st->error.empty()) throw StoreUnavailable(st->error);
  return replies;
}

Namespace RedisStore::open_namespace(std::string_view name) {
  validate_name("namespace", name);
  // Ids only tell this process's namespaces apart; the keys carry the name.
  std::lock_guard g(impl_->ns_mu);
  auto& v = impl_->namespaces;
  auto it = std::find(v.begin(), v.end(), name);
  if (it == v.end()) it = v.insert(v.end(), std::string(name));
  return Namespace{std::string(name), static_cast<std::uint32_t>(it - v.begin() + 1)};
}

void RedisStore::reset_namespace(const Namespace& ns) {
  const auto keys = impl_->scan(redis_store::namespace_pattern(impl_->o.prefix, ns.name));
  impl_->for_each_key(keys, [](const std::string& k) {
    return std::vector<std::string>{"UNLINK", k};
  });
  impl_->denials.clear();
}

std::size_t RedisStore::prune(Micros now) {
  Impl& im = *impl_;
  const std::vector<std::string> argv = redis_store::encode_prune(im.o.server_time ? 0 : now);
  const auto keys = im.scan(redis_store::usage_pattern(im.o.prefix));
  std::size_t removed = 0;
  for (const std::string& k : keys) {
    const redis::Reply r = im.client.evalsha(im.script, {k}, argv);
    if (!r.is_array() || r.elements.empty()) {
      throw StoreUnavailable("redis prune: " + redis::to_string(r));
    }
    removed += static_cast<std::size_t>(r.elements[0].integer);
  }
  if (!im.o.server_time) {  // lease records (in server time, Redis expires them)
    const std::vector<std::string> rargv = redis_store::encode_prune(now, true);
    for (const std::string& k : im.scan(redis_store::lease_pattern(im.o.prefix))) {
      const redis::Reply r = im.client.evalsha(im.script, {k}, rargv);
      if (!r.is_array() || r.elements.empty()) {
        throw StoreUnavailable("redis prune: " + redis::to_string(r));
      }
      removed += static_cast<std::size_t>(r.elements[0].integer);
    }
  }
  return removed;
}

std::size_t RedisStore::size() const {
  Impl& im = *impl_;
  const auto keys = im.scan(redis_store::usage_pattern(im.o.prefix));
  std::size_t n = 0;
  for (const auto& r : im.for_each_key(keys, [](const std::string& k) {
         return std::vector<std::string>{"HLEN", k};
       })) {
    n += static_cast<std::size_t>(std::max<std::int64_t>(0, r.integer));
  }
  return n;
}

}  // namespace admit
