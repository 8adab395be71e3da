// Calendar window bounds in an IANA time zone (date/tz.h over the system tzdata).
#pragma once

#include <mutex>
#include <string>

#include "admit/core/limit.hpp"

namespace admit {

/**
 * Computes the window containing an instant for one WindowSpec. Validates the spec on
 * construction (unknown zone, bad "HH:MM" -> ValidationError). Thread-safe; caches the
 * last window so the common case is a comparison.
 */
class WindowCalendar {
 public:
  explicit WindowCalendar(WindowSpec spec);
  const WindowSpec& spec() const { return spec_; }
  WindowBounds at(Micros now) const;

 private:
  WindowBounds compute(Micros now) const;

  WindowSpec spec_;
  const void* zone_ = nullptr;  // const date::time_zone*
  int reset_minutes_ = 0;       // minutes after local midnight
  mutable std::mutex mu_;
  mutable WindowBounds cached_{};
};

}  // namespace admit
