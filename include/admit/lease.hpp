// Lease: what an allowed acquire returns. It holds what was consumed so that the caller can
// reconcile the estimate with the real usage (adjust), keep it (commit) or give it back
// (rollback). Like a scope guard, it ends by itself: leaving its scope normally commits,
// leaving it by an exception rolls back. Concurrency slots are held until the lease ends or
// its TTL passes (then the store reclaims them even if this object is never destroyed).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "admit/amounts.hpp"
#include "admit/core/decision.hpp"
#include "admit/core/limit.hpp"

namespace admit {

class Limiter;

namespace detail {
struct LeaseKey;     // the key chain and limits a lease refers to (the Limiter's own)
struct LeaseAccess;  // the Limiter's access to a lease's private state

/// A counted reference to a LeaseKey (src/limiter/lease_key.hpp). A reference taken or let
/// go on the thread whose plan cache holds the key touches no shared counter: that cache
/// buys references in batches and takes back the ones let go (see lease.cpp). Move-only;
/// share() is the copy.
class KeyRef {
 public:
  KeyRef() = default;
  KeyRef(KeyRef&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
  KeyRef& operator=(KeyRef&& o) noexcept {
    if (this != &o) {
      reset();
      p_ = std::exchange(o.p_, nullptr);
    }
    return *this;
  }
  KeyRef(const KeyRef&) = delete;
  KeyRef& operator=(const KeyRef&) = delete;
  ~KeyRef() { reset(); }

  /// Takes the one reference a new key (made with new, count 1) carries.
  static KeyRef adopt(const LeaseKey* fresh) noexcept {
    KeyRef r;
    r.p_ = fresh;
    return r;
  }
  /// Another reference to the same key (none if this holds none).
  KeyRef share() const noexcept {
    KeyRef r;
    if (p_ != nullptr) retain(p_);
    r.p_ = p_;
    return r;
  }
  void reset() noexcept {
    if (p_ != nullptr) release(std::exchange(p_, nullptr));
  }
  const LeaseKey* get() const noexcept { return p_; }
  const LeaseKey& operator*() const noexcept { return *p_; }
  const LeaseKey* operator->() const noexcept { return p_; }
  explicit operator bool() const noexcept { return p_ != nullptr; }

  /// This thread's plan cache holds `key` now (nullptr: none): references to it are counted
  /// on this thread from here on. Gives back what was bought for the key it held before.
  static void bias(const LeaseKey* key) noexcept;

 private:
  static void retain(const LeaseKey* p) noexcept;
  static void release(const LeaseKey* p) noexcept;
  const LeaseKey* p_ = nullptr;
};
}  // namespace detail

/**
 * Move-only. A default or denied Lease is inactive; every operation on it is a no-op except
 * adjust(), which throws LeaseError. Not thread-safe (one owner at a time).
 *
 * Scope: an active lease that is destroyed without commit() or rollback() ends as its scope
 * does. It commits (keeps the usage, frees its concurrency slots) when the scope is left
 * normally, and rolls back (refunds, frees the slots) when it is left because of an exception:
 * the lease records std::uncaught_exceptions() when its life starts (made by the Limiter, or
 * move-constructed: the new object's scope is its own) and rolls back if more exceptions are
 * in flight when it is destroyed. So a lease taken inside a destructor that runs during
 * unwinding commits when its own scope ends normally.
 *
 *   if (Lease lease = limiter.try_acquire(user, model, {{"rpm", 1}, {"tpm", 1200}})) {
 *     Reply r = call_model();                        // throws: everything is refunded
 *     (void)lease.adjust({{"tpm", r.tokens - 1200}});  // reconcile with the real usage
 *   }                                                // commits; frees the slots
 *
 * `if (limiter.try_acquire(...)) call();` commits at once: the temporary lease dies at the end
 * of the condition. That enforces rate and window limits (the usage is kept) but frees a
 * concurrency slot before call() starts; Limiter::consume() is that one-line form without a
 * lease. To hold a slot for the call, name the lease: `if (auto lease = ...) { call(); }`.
 */
class [[nodiscard]] Lease {
 public:
  Lease() = default;
  /// Ends an active lease as its scope ends: commit, or rollback during an exception thrown
  /// since the lease's life started (see the class comment).
  ~Lease();
  /// Takes over `o` (which becomes inactive); the new lease's scope starts here.
  Lease(Lease&& o) noexcept;
  /// Ends this lease first if it is active, as its destructor would at this point (commit,
  /// unless an exception thrown in its scope is in flight), then takes over `o`. This object
  /// keeps its own scope: it is destroyed where it was declared.
  Lease& operator=(Lease&& o) noexcept;
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;

  /// True while the lease holds capacity (allowed, not yet committed or rolled back).
  bool active() const { return limiter_ != nullptr; }
  /// True if the acquire that made this lease was allowed.
  bool allowed() const { return decision_.allowed; }
  explicit operator bool() const { return decision_.allowed; }
  const Decision& decision() const { return decision_; }
  /// Lease id of a lease that holds concurrency slots or is durable (random-based: distinct
  /// across the processes sharing a store); 0 otherwise.
  std::uint64_t id() const { return id_; }
  /// True for a lease taken with AcquireOptions::durable (or by Limiter::resume): the store
  /// keeps its record, so any Limiter on the same store and namespace can take it up.
  bool durable() const { return record_ != nullptr; }
  /// A durable lease's token (what Limiter::resume takes; URL-safe); empty otherwise.
  std::string token() const;
  /// When its concurrency slots are reclaimed if it is never ended (µs since epoch).
  Micros expires_at() const { return expires_at_; }
  /// The requesting entity and the resource of an allowed acquire; empty otherwise.
  std::string_view entity() const;
  std::string_view resource() const;

  /// One limit an active lease holds capacity on.
  struct Holding {
    std::string_view entity;  ///< whose limit: the requester or an ancestor
    std::string_view limit;   ///< the limit's name
    std::int64_t amount = 0;  ///< the net amount held: what the acquire took, after adjust()
  };
  /// What an active lease holds, one entry per limit of its key chain, requester first (empty
  /// for an inactive lease). The views live as long as the lease.
  std::vector<Holding> holdings() const;

  /**
   * Tells the adaptive limits of this lease (Limit::adaptive) how the request went: success
   * lets their rates grow, failure (e.g. a 429) decreases them, once per congestion event
   * (a failure of a request sent before the latest decrease changes nothing). The first
   * mark counts, later ones are ignored. Allowed after commit/rollback.
   * @return true if this call recorded the outcome.
   */
  bool mark_success();
  bool mark_failure();

  /**
   * Reconciles with real usage: a positive delta consumes more (a bucket may go into debt,
   * so later callers wait), a negative one refunds (never more than this lease consumed on
   * that limit; window refunds only while the same window lasts). Concurrency limits cannot
   * be adjusted. Still allowed after the TTL passed (usage is usage).
   * @return the decision after the adjustment: allowed, or code store_unavailable (not
   *         allowed, nothing adjusted) when the store could not be reached.
   * @throws LeaseError if the lease ended (LeaseNotFound: a durable lease that ended,
   *         expired or was changed elsewhere; this object is inactive then); ValidationError
   *         for an unknown limit name.
   */
  Decision adjust(const Amounts& deltas);

  /// Receives the outcome of an asynchronous adjust, commit or rollback. Must not block.
  using DecisionCallback = std::function<void(Decision)>;

  /**
   * adjust() without blocking on the store (Store::apply_async): `done` receives the decision
   * exactly once, on any thread (a RedisStore's I/O thread, or inside this call when the
   * store answers synchronously). Until then the lease must stay where it is: not moved, not
   * destroyed, no other call on it.
   * @throws LeaseError, ValidationError as adjust() does, before anything is sent.
   */
  void adjust_async(const Amounts& deltas, DecisionCallback done);
  /// commit() and rollback() without blocking on the store: the lease ends at once (this
  /// object is inactive when the call returns, so it may be destroyed); the store is told in
  /// the background and `done` (may be empty) receives the outcome like adjust_async's. On an
  /// ended or denied lease `done` gets an ok decision at once.
  void commit_async(DecisionCallback done = {});
  void rollback_async(DecisionCallback done = {});

  /**
   * The completion-token forms (Boost.Asio: callbacks, asio::use_future,
   * asio::use_awaitable), signature void(Decision). Defined in admit/async.hpp (link
   * admit::sched), which must be included to call them:
   *
   *   Decision d = co_await lease.async_adjust({{"tpm", used - 1200}}, asio::use_awaitable);
   *   co_await lease.async_commit(asio::use_awaitable);
   */
  template <class CompletionToken>
  auto async_adjust(const Amounts& deltas, CompletionToken&& token);
  template <class CompletionToken>
  auto async_commit(CompletionToken&& token);
  template <class CompletionToken>
  auto async_rollback(CompletionToken&& token);

  /**
   * Moves the lease's end to `ttl` from now (a heartbeat for a long stream): its concurrency
   * slots and, for a durable lease, its record are reclaimed then instead. A shorter `ttl`
   * brings the end closer. Usage is not changed.
   * @return ok, or code store_unavailable (nothing changed) or lease_not_found (a durable
   *         lease that ended, expired or was changed elsewhere: this object is inactive then).
   * @throws LeaseError if the lease ended; ValidationError unless ttl > 0.
   */
  Decision extend(Micros ttl);
  /// extend() without blocking on the store, as adjust_async().
  void extend_async(Micros ttl, DecisionCallback done);

  /**
   * Lets go of a durable lease without ending it: this object becomes inactive and the lease
   * lives on in the store until its expiry, for Limiter::resume(token) to take it up (in
   * this process or another). If nobody ends it, the store commits it at its expiry (usage
   * kept, slots freed).
   * @return the token.
   * @throws LeaseError unless the lease is active and durable.
   */
  std::string detach();

  /// Keeps what was consumed and frees the concurrency slots. Idempotent; a no-op after
  /// rollback().
  void commit();
  /// Returns what was consumed (rate always, windows only within the same window) and frees
  /// the slots. After the TTL passed, a rollback only frees what is still held. Idempotent; a
  /// no-op after commit().
  void rollback();

 private:
  friend struct detail::LeaseAccess;

  struct Held {
    std::int64_t consumed = 0;  // net amount this lease holds on the limit
    Micros window_end = 0;      // windows: the window it counted in; adaptive: the epoch
  };
  /// One Held per limit of the lease, inline up to four (no allocation for the usual case).
  class HeldList {
   public:
    HeldList() = default;
    HeldList(HeldList&& o) noexcept
        : inline_(o.inline_), more_(std::move(o.more_)), size_(std::exchange(o.size_, 0)) {}
    HeldList& operator=(HeldList&& o) noexcept {
      inline_ = o.inline_;
      more_ = std::move(o.more_);
      size_ = std::exchange(o.size_, 0);
      return *this;
    }
    /// `n` value-initialised entries; what it held before is dropped.
    void reset(std::size_t n) {
      size_ = n;
      if (n <= inline_.size()) {
        more_.reset();
        inline_ = {};
      } else {
        more_ = std::make_unique<Held[]>(n);
      }
    }
    std::size_t size() const { return size_; }
    Held& operator[](std::size_t i) { return (more_ ? more_.get() : inline_.data())[i]; }
    const Held& operator[](std::size_t i) const {
      return (more_ ? more_.get() : inline_.data())[i];
    }

   private:
    std::array<Held, 4> inline_{};
    std::unique_ptr<Held[]> more_;  // more than four limits
    std::size_t size_ = 0;
  };

  void end(bool refund);
  void end_async(bool refund, DecisionCallback done);
  void require_active(const char* what) const;
  /// Ends the lease as leaving its scope now would: rollback if an exception thrown since
  /// its life started is in flight, else commit.
  void end_scope() {
    if (limiter_ != nullptr) end(std::uncaught_exceptions() > uncaught_);
  }
  bool mark(bool success);

  Limiter* limiter_ = nullptr;
  Decision decision_;
  std::uint64_t id_ = 0;
  bool holds_slots_ = false;                   // any concurrency slot: commit must reach the store
  bool marked_ = false;                        // mark_success/mark_failure done
  int uncaught_ = std::uncaught_exceptions();  // exceptions in flight when its life started
  Micros expires_at_ = 0;
  detail::KeyRef key_;
  HeldList held_;                        // one per key_->items
  std::unique_ptr<std::string> record_;  // durable: the record the store holds, exactly
};

}  // namespace admit
