// Fixed, printed, overridable seeds for randomized tests (ADMIT_TEST_SEED).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <string>

namespace admit::test {

inline std::uint64_t test_seed(std::uint64_t fallback = 20261124) {
  if (const char* s = std::getenv("ADMIT_TEST_SEED"); s != nullptr && *s != '\0') {
    return std::strtoull(s, nullptr, 10);
  }
  return fallback;
}

inline std::string seed_note(std::uint64_t seed) {
  const std::string s = std::to_string(seed);
  std::string out = "seed ";
  out += s;
  out += " (rerun with ADMIT_TEST_SEED=";
  out += s;
  out += ")";
  return out;
}

}  // namespace admit::test
