// Limiter::audit and Limiter::audit_log: the store's audit log of the Limiter's namespace, the
// event's time from the Limiter's clock. The Limiter writes no event by itself: the caller that
// makes a change (admitd) knows who made it.
#include <utility>
#include <vector>

#include "admit/limiter.hpp"
#include "limiter_impl.hpp"

namespace admit {

std::uint64_t Limiter::audit(AuditEvent event) {
  if (event.time == 0) event.time = impl_->clock.now();
  return impl_->store.append_audit(impl_->ns, std::move(event));
}

std::vector<AuditEvent> Limiter::audit_log(const AuditQuery& query) {
  return impl_->store.read_audit(impl_->ns, query);
}

}  // namespace admit
