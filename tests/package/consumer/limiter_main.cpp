// A memory-only user of admit: Limiter + MemoryStore (admit::limiter, pkg-config admit-limiter).
#include <admit/limiter.hpp>
#include <admit/store/memory_store.hpp>
#include <admit/version.hpp>
#include <iostream>

static_assert(ADMIT_VERSION_MAJOR == 0 && ADMIT_VERSION_MINOR >= 2);

int main() {
  admit::MemoryStore store;
  admit::SystemClock clock;
  admit::Limiter limiter(store, clock);
  limiter.set_limits("gpt-4o", {admit::Limit::per_minute("rpm", 5)});
  admit::Lease lease = limiter.try_acquire("user-1", "gpt-4o", {{"rpm", 1}});
  if (!lease) return 1;
  lease.commit();
  for (const auto& s : limiter.stats("user-1", "gpt-4o").limits) {
    std::cout << "limiter consumer: admit " << admit::version_string << ", " << store.name() << ", "
              << s.entity << " " << s.limit << ": " << s.available << "/" << s.capacity << "\n";
  }
}
