// SubmitHandler: the type-erased completion handler of one Scheduler::async_submit, kept in
// the request's record without an allocation when it is small and runs on the scheduler's own
// executor. Internal to the scheduler; in a public header because async_submit is a template.
#pragma once

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <cstddef>
#include <exception>
#include <new>
#include <type_traits>
#include <utility>

#include "admit/sched/request.hpp"

namespace admit::sched {

/// The completion signature of async_submit: an exception (a SchedulerError, or the request
/// function's own transport failure) or the Result.
using SubmitSignature = void(std::exception_ptr, Result);

namespace detail {

/**
 * The completion handler of one async_submit, type-erased. A handler whose associated
 * executor is the scheduler's own (a plain callback; a coroutine's handler on that very
 * executor) is "direct": the scheduler calls it from one completion op it posts to that
 * executor per batch of finished requests, kept inline when small (no allocation). Any other
 * handler (bound to a strand, to another executor) is kept as an any_completion_handler and
 * posted with asio::post, which runs it on its own executor.
 */
class SubmitHandler {
 public:
  template <class Handler>
  SubmitHandler(Handler&& h, const boost::asio::any_io_executor& ex)
      : direct_(is_direct(h, ex)),
        vt_(direct_ && fits<std::decay_t<Handler>>() ? &kTable<std::decay_t<Handler>> : nullptr),
        erased_(erase_unless(vt_ != nullptr, h)) {
    if (vt_ != nullptr) ::new (static_cast<void*>(buf_)) std::decay_t<Handler>(std::move(h));
  }
  SubmitHandler(SubmitHandler&& o) noexcept
      : direct_(o.direct_), vt_(o.vt_), erased_(std::move(o.erased_)) {
    if (vt_ != nullptr) vt_->move(buf_, o.buf_);
  }
  // No move assignment: Boost 1.81's any_completion_handler::operator=(&&) wraps the
  // handler in itself and recurses forever.
  SubmitHandler& operator=(SubmitHandler&&) = delete;
  ~SubmitHandler() {
    if (vt_ != nullptr) vt_->destroy(buf_);
  }

  /// Whether the scheduler may call it directly from an op on its own executor.
  bool direct() const noexcept { return direct_; }
  /// Calls the handler (once).
  void invoke(std::exception_ptr error, Result result) {
    if (vt_ != nullptr) {
      vt_->invoke(buf_, std::move(error), std::move(result));
    } else {
      std::move(erased_)(std::move(error), std::move(result));
    }
  }
  /// The handler as an any_completion_handler (for asio::post); this one is empty after.
  boost::asio::any_completion_handler<SubmitSignature> take_erased() {
    if (vt_ == nullptr) return std::move(erased_);
    // A direct handler is posted only on a rare path (a request completed while it runs).
    boost::asio::any_completion_handler<SubmitSignature> out(
        [h = SubmitHandler(std::move(*this))](std::exception_ptr e, Result r) mutable {
          h.invoke(std::move(e), std::move(r));
        });
    return out;
  }

 private:
  static constexpr std::size_t kInline = 48;
  template <class H>
  static bool is_direct(const H& h, const boost::asio::any_io_executor& ex) {
    using Assoc = boost::asio::associated_executor_t<H, boost::asio::any_io_executor>;
    if constexpr (std::is_same_v<Assoc, boost::asio::any_io_executor>) {
      return boost::asio::get_associated_executor(h, ex) == ex;
    } else {
      return false;
    }
  }
  template <class H>
  static constexpr bool fits() {
    return sizeof(H) <= kInline && alignof(H) <= alignof(std::max_align_t) &&
           std::is_nothrow_move_constructible_v<H>;
  }
  // Constructed, never assigned (see the move assignment).
  template <class H>
  static boost::asio::any_completion_handler<SubmitSignature> erase_unless(bool inline_it, H& h) {
    if (inline_it) return {};
    return boost::asio::any_completion_handler<SubmitSignature>(std::move(h));
  }
  struct Table {
    void (*invoke)(void* self, std::exception_ptr&& e, Result&& r);
    void (*move)(void* to, void* from) noexcept;
    void (*destroy)(void* self) noexcept;
  };
  template <class H>
  static constexpr Table kTable{
      [](void* self, std::exception_ptr&& e, Result&& r) {
        std::move (*static_cast<H*>(self))(std::move(e), std::move(r));
      },
      [](void* to, void* from) noexcept { ::new (to) H(std::move(*static_cast<H*>(from))); },
      [](void* self) noexcept { static_cast<H*>(self)->~H(); }};

  bool direct_;
  const Table* vt_;  // set: the handler is inline in buf_ (and erased_ is empty)
  boost::asio::any_completion_handler<SubmitSignature> erased_;
  alignas(std::max_align_t) unsigned char buf_[kInline];
};

}  // namespace detail

}  // namespace admit::sched
