// A user of every component (admit::admit, pkg-config admit): SqliteStore, a provider
// profile found in default_profiles_dir(), a completion-token acquire (admit::sched), and a
// token count (admit::tokens: its rank tables are inside libadmit_tokens.a).
// argv[1]: the SQLite file to create.
#include <admit/adapt/profiles.hpp>
#include <admit/async.hpp>
#include <admit/limiter.hpp>
#include <admit/store/sqlite_store.hpp>
#include <admit/tokens.hpp>
#include <admit/version.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/io_context.hpp>
#include <iostream>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  admit::SqliteStore store({.path = argv[1]});
  admit::SystemClock clock;
  admit::Limiter limiter(store, clock);
  admit::add_provider(limiter, admit::load_profile_by_name("openai", "tier-1"));
  admit::Lease lease = limiter.try_acquire("user-1", "gpt-4o", {{"rpm", 1}, {"tpm", 100}});
  if (!lease) return 1;
  lease.commit();
  boost::asio::io_context io;
  bool async_allowed = false;
  limiter.async_try_acquire("user-1", "gpt-4o", {{"rpm", 1}, {"tpm", 100}},
                            boost::asio::bind_executor(io, [&](admit::Lease l) {
                              async_allowed = l.allowed();
                              l.commit();
                            }));
  io.run();
  if (!async_allowed) return 1;
  std::cout << "full consumer: admit " << admit::version_string << ", " << store.name()
            << ", profiles " << admit::default_profiles_dir().string() << "\n";
  for (const auto& s : limiter.stats("user-1", "gpt-4o").limits) {
    if (s.limit == "rpm") {
      std::cout << "full consumer: " << s.entity << " " << s.limit << ": " << s.available << "/"
                << s.capacity << "\n";
    }
  }
  const admit::TokenCount tokens = admit::count_tokens("hello world", "gpt-4o");
  std::cout << "full consumer: tokens " << tokens.tokens << " " << admit::to_string(tokens.encoding)
            << "\n";
}
