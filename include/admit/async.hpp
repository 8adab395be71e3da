// The completion-token forms of admit's asynchronous calls (Boost.Asio): Limiter::
// async_try_acquire and async_acquire, Lease::async_adjust, async_commit and async_rollback.
// One function serves every token: a callback (bind an executor with asio::bind_executor),
// asio::use_future, asio::use_awaitable (C++20 coroutines), asio::deferred.
//
//   asio::awaitable<void> call_model(admit::Limiter& limiter) {
//     admit::Lease lease = co_await limiter.async_acquire(
//         "user-1", "gpt-4o", {{"rpm", 1}, {"tpm", 1200}}, 5s, asio::use_awaitable);
//     if (!lease) co_return;  // lease.decision() says why (timeout, cancelled, ...)
//     ...
//     co_await lease.async_commit(asio::use_awaitable);
//   }
//
// Completions run on the token's associated executor (posted, never inside the initiating
// call); async_acquire's timer runs there too and follows the Limiter's Clock (a ManualClock
// in tests: advance it, then run the io_context). Part of admit::sched, the layer whose
// headers are Asio's API.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

#include "admit/async/timer.hpp"
#include "admit/lease.hpp"
#include "admit/limiter.hpp"

namespace admit::detail {

// One pending completion: the handler and work on its executor (so io_context::run() does not
// return while the store or a timer still has the operation). complete() posts the handler
// with its value to that executor, after clearing the handler's cancellation slot.
template <class Handler, class Value>
class TokenCompletion {
 public:
  explicit TokenCompletion(Handler h)
      : handler_(std::move(h)), work_(boost::asio::get_associated_executor(handler_)) {}

  boost::asio::associated_executor_t<Handler> executor() const { return work_.get_executor(); }
  boost::asio::associated_cancellation_slot_t<Handler> slot() const {
    return boost::asio::get_associated_cancellation_slot(handler_);
  }

  /// The callback the asynchronous call underneath takes: completes `self` with its value.
  static auto callback(std::shared_ptr<TokenCompletion> self) {
    return [self = std::move(self)](Value v) mutable { complete(std::move(self), std::move(v)); };
  }

  static void complete(std::shared_ptr<TokenCompletion> self, Value v) {
    auto ex = self->work_.get_executor();
    boost::asio::post(ex, [self = std::move(self), v = std::move(v)]() mutable {
      auto slot = self->slot();
      if (slot.is_connected()) slot.clear();
      Handler h = std::move(self->handler_);
      self->work_.reset();
      std::move(h)(std::move(v));
    });
  }

 private:
  Handler handler_;
  boost::asio::executor_work_guard<boost::asio::associated_executor_t<Handler>> work_;
};

template <class Value, class Handler>
auto make_token_completion(Handler&& h) {
  return std::make_shared<TokenCompletion<std::decay_t<Handler>, Value>>(std::forward<Handler>(h));
}

// Connects a handler's cancellation slot to an AsyncWait that starts after the slot is
// assigned (Asio requires the assignment before the operation can complete); a request
// that comes first is kept and applied when the wait is set.
class WaitCancellation {
 public:
  void set(Limiter::AsyncWait wait) {
    std::lock_guard g(mu_);
    wait_ = std::move(wait);
    if (requested_) wait_.cancel();
  }
  void request() {
    std::lock_guard g(mu_);
    requested_ = true;
    wait_.cancel();  // a no-op before set()
  }

 private:
  std::mutex mu_;
  Limiter::AsyncWait wait_;
  bool requested_ = false;
};

}  // namespace admit::detail

namespace admit {

template <class CompletionToken>
auto Limiter::async_try_acquire(std::string_view entity, std::string_view resource,
                                const Amounts& amounts, CompletionToken&& token) {
  return async_try_acquire(entity, resource, amounts, AcquireOptions{},
                           std::forward<CompletionToken>(token));
}

template <class CompletionToken>
auto Limiter::async_try_acquire(std::string_view entity, std::string_view resource,
                                const Amounts& amounts, const AcquireOptions& options,
                                CompletionToken&& token) {
  // Owned copies: a deferred token may start the operation after the arguments are gone.
  return boost::asio::async_initiate<CompletionToken, void(Lease)>(
      [this](auto handler, const std::string& e, const std::string& r, const Amounts& a,
             const AcquireOptions& o) {
        auto c = detail::make_token_completion<Lease>(std::move(handler));
        try_acquire_async(e, r, a, std::decay_t<decltype(*c)>::callback(c), o);
      },
      token, std::string(entity), std::string(resource), amounts, options);
}

template <class CompletionToken>
auto Limiter::async_acquire(std::string_view entity, std::string_view resource,
                            const Amounts& amounts, std::chrono::microseconds timeout,
                            CompletionToken&& token) {
  return async_acquire(entity, resource, amounts, timeout, AcquireOptions{},
                       std::forward<CompletionToken>(token));
}

template <class CompletionToken>
auto Limiter::async_acquire(std::string_view entity, std::string_view resource,
                            const Amounts& amounts, std::chrono::microseconds timeout,
                            const AcquireOptions& options, CompletionToken&& token) {
  return boost::asio::async_initiate<CompletionToken, void(Lease)>(
      [this, timeout](auto handler, const std::string& e, const std::string& r, const Amounts& a,
                      const AcquireOptions& o) {
        auto c = detail::make_token_completion<Lease>(std::move(handler));
        auto timer = AsioTimer::create(boost::asio::any_io_executor(c->executor()), clock());
        std::shared_ptr<detail::WaitCancellation> cancellation;
        if (auto slot = c->slot(); slot.is_connected()) {
          cancellation = std::make_shared<detail::WaitCancellation>();
          slot.assign([cancellation](boost::asio::cancellation_type type) {
            if ((type & (boost::asio::cancellation_type::terminal |
                         boost::asio::cancellation_type::partial |
                         boost::asio::cancellation_type::total)) !=
                boost::asio::cancellation_type::none) {
              cancellation->request();
            }
          });
        }
        AsyncWait wait = acquire_async(e, r, a, timeout, std::move(timer),
                                       std::decay_t<decltype(*c)>::callback(c), o);
        if (cancellation) cancellation->set(std::move(wait));
      },
      token, std::string(entity), std::string(resource), amounts, options);
}

template <class CompletionToken>
auto Lease::async_adjust(const Amounts& deltas, CompletionToken&& token) {
  return boost::asio::async_initiate<CompletionToken, void(Decision)>(
      [this](auto handler, const Amounts& d) {
        auto c = detail::make_token_completion<Decision>(std::move(handler));
        adjust_async(d, std::decay_t<decltype(*c)>::callback(c));
      },
      token, deltas);
}

template <class CompletionToken>
auto Lease::async_commit(CompletionToken&& token) {
  return boost::asio::async_initiate<CompletionToken, void(Decision)>(
      [this](auto handler) {
        auto c = detail::make_token_completion<Decision>(std::move(handler));
        commit_async(std::decay_t<decltype(*c)>::callback(c));
      },
      token);
}

template <class CompletionToken>
auto Lease::async_rollback(CompletionToken&& token) {
  return boost::asio::async_initiate<CompletionToken, void(Decision)>(
      [this](auto handler) {
        auto c = detail::make_token_completion<Decision>(std::move(handler));
        rollback_async(std::decay_t<decltype(*c)>::callback(c));
      },
      token);
}

}  // namespace admit
