// write_behind: the cache's dirty entries and lease records are written in one transaction
// every write_behind_interval (by the flusher thread), and on flush(), prune(), size() and
// destruction. A failed flush keeps them pending; apply() reports it (flush_error) until a
// flush succeeds. The loss bound this gives is in docs/stores.md ("Durability").
#include <algorithm>
#include <chrono>
#include <exception>
#include <mutex>
#include <string>

#include "admit/core/error.hpp"
#include "store_impl.hpp"

namespace admit {

void SqliteStore::Impl::flush_locked() {
  if (dirty.empty() && dirty_records.empty()) {
    durable = ops;
    flush_error.reset();
    return;
  }
  try {
    // Lease records with the rows of their usage: after a crash the file has both or neither.
    Txn txn(db, true);
    for (const Entry* e : dirty) write(*e);
    for (const Record* r : dirty_records) write(*r);
    txn.commit();
  } catch (const StoreUnavailable& e) {
    flush_error = std::string(e.what()) + " (write-behind flush failed; changes kept pending)";
    throw;
  }
  for (Entry* e : dirty) settle(*e);
  dirty.clear();
  for (Record* r : dirty_records) settle(*r);
  dirty_records.clear();
  durable = ops;
  flush_error.reset();
}

void SqliteStore::Impl::start_flusher() {
  flusher = std::thread([this] { flush_loop(); });
}

void SqliteStore::Impl::stop_flusher() {
  if (flusher.joinable()) {
    {
      std::lock_guard g(mu);
      stopping = true;
    }
    flusher_cv.notify_all();
    flusher.join();
    std::lock_guard g(mu);
    try {
      flush_locked();
    } catch (const std::exception&) {  // nowhere to report it; the bound still holds
    }
  }
}

void SqliteStore::Impl::flush_loop() {
  std::unique_lock lk(mu);
  const auto interval = std::chrono::microseconds(opt.write_behind_interval);
  auto next = std::chrono::steady_clock::now() + interval;
  while (!stopping) {
    flusher_cv.wait_until(lk, next, [this] { return stopping; });
    if (stopping) break;
    try {
      flush_locked();
    } catch (const std::exception&) {  // kept in flush_error; apply() reports it
    }
    next += interval;
    next = std::max(next, std::chrono::steady_clock::now());
  }
}

}  // namespace admit
