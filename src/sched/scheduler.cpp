// Scheduler: the public face of detail::Core (src/sched/core.hpp).
#include "admit/sched/scheduler.hpp"

#include <exception>
#include <future>
#include <memory>
#include <utility>

#include "core.hpp"

namespace admit::sched {

Scheduler::Scheduler(executor_type executor, Limiter& limiter, SchedulerOptions options,
                     std::shared_ptr<ProviderPlugin> provider)
    : core_(std::make_shared<detail::Core>(std::move(executor), limiter, std::move(options),
                                           std::move(provider))) {
  core_->start_timer();
}

Scheduler::~Scheduler() { core_->close(); }

const Scheduler::executor_type& Scheduler::own_executor() const noexcept {
  return core_->executor();
}

void Scheduler::submit_erased(RequestMetadata&& metadata, RequestFn&& fn,
                              detail::SubmitHandler&& done) {
  core_->submit(std::move(metadata), std::move(fn), std::move(done));
}

std::future<Result> Scheduler::submit(RequestMetadata metadata, RequestFn fn) {
  auto promise = std::make_shared<std::promise<Result>>();
  std::future<Result> result = promise->get_future();
  async_submit(std::move(metadata), std::move(fn), [promise](std::exception_ptr error, Result r) {
    if (error) {
      promise->set_exception(std::move(error));
    } else {
      promise->set_value(std::move(r));
    }
  });
  return result;
}

std::size_t Scheduler::discover_limits() { return core_->discover_limits(); }

void Scheduler::set_tenant_weight(std::string tenant, double weight) {
  core_->set_weight(std::move(tenant), weight);
}

std::string Scheduler::bucket_for(std::string_view model, std::string_view resource_type) const {
  return core_->bucket_for(model, resource_type);
}

SchedulerStats Scheduler::stats() const { return core_->stats(); }
std::vector<BucketBreaker> Scheduler::breakers() const { return core_->breakers(); }
Micros Scheduler::held_until(std::string_view queue) const { return core_->held_until(queue); }
BreakerState Scheduler::breaker_state(std::string_view queue) const {
  return core_->breaker_state(queue);
}
const SchedulerOptions& Scheduler::options() const { return core_->options(); }
Scheduler::executor_type Scheduler::get_executor() const { return core_->executor(); }

}  // namespace admit::sched
