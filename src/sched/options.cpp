// Names of the scheduler's enums.
#include "admit/sched/options.hpp"

namespace admit::sched {

std::string_view to_string(Mode m) noexcept {
  switch (m) {
    case Mode::basic:
      return "basic";
    case Mode::intelligent:
      return "intelligent";
    case Mode::account:
      return "account";
  }
  return "intelligent";
}

}  // namespace admit::sched
