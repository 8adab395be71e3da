// The group commit's script runs: a lane's batch encoded (script_codec), sent with one
// EVALSHA, each op's element of the reply read back and its caller answered; then the lane's
// next batch. Lanes and Pending are in group_commit.hpp.
#include "group_commit.hpp"

#include <exception>
#include <stdexcept>

#include "admit/core/error.hpp"
#include "script_codec.hpp"
#include "store_impl.hpp"

namespace admit {

using redis_store::Pending;

void RedisStore::Impl::send(std::vector<Pending*> batch, std::optional<std::uint16_t> lane) {
  while (!batch.empty()) {
    std::vector<std::string> keys, argv;
    scripts.fetch_add(1, std::memory_order_relaxed);
    try {
      redis_store::encode_fast(batch, o.server_time, keys, argv);
      client.async_evalsha(script, keys, argv,
                           [this, batch, lane](std::error_code ec, redis::Reply r) {
                             deliver(batch, ec, r);
                             if (lane) send(lanes.take(*lane), lane);
                           });
      return;
    } catch (const std::exception& e) {
      deliver(batch, std::make_error_code(std::errc::invalid_argument),
              redis::Reply::error(e.what()));
    }
    if (!lane) return;
    batch = lanes.take(*lane);
  }
}

void RedisStore::Impl::deliver(const std::vector<Pending*>& batch, std::error_code ec,
                               const redis::Reply& r) {
  std::string error;
  if (ec || r.is_error()) {
    error = r.str;
  } else if (!r.is_array() || r.elements.size() != batch.size()) {
    error = "unexpected reply " + redis::to_string(r);
  }
  for (std::size_t i = 0; i < batch.size(); ++i) {
    Pending* p = batch[i];
    if (!error.empty()) {
      p->error = std::make_exception_ptr(StoreUnavailable("redis script: " + error));
    } else {
      try {
        p->ok = read_fast(*p, r.elements[i]);
      } catch (...) {
        p->error = std::current_exception();
      }
    }
    p->answer();  // p may be gone after this
  }
}

bool RedisStore::Impl::read_fast(Pending& p, const redis::Reply& e) {
  if (e.is_integer()) {
    learn_clock(e.integer, p.now);
    std::fill(p.results.begin(), p.results.end(), ItemResult{});
    return true;
  }
  const bool ok = read_items(e, p.now, p.results);
  if (o.deny_cache && !ok) {
    for (std::size_t i = 0; i < p.items.size(); ++i) {
      const Pending::Item& it = p.items[i];
      denials.remember(p.keys[it.key], std::string_view(it.field).substr(1), it.amount, p.now,
                       it.params, it.capacity, p.results[i]);
    }
  }
  return ok;
}

}  // namespace admit
