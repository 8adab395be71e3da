// Adaptive limits: one AIMD control law per (entity, resource, limit), made on first use and
// replaced when the limit's settings change. Leases of the key share it (LeaseKey::Item::aimd).
#pragma once

#include <absl/container/flat_hash_map.h>

#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "admit/core/aimd.hpp"
#include "admit/core/limit.hpp"

namespace admit::detail {

class AimdRegistry {
 public:
  // The control law of limit `l` of (entity, resource); nullptr if none yet and !create.
  std::shared_ptr<AimdLaw> controller(const Limit& l, std::string_view entity,
                                      std::string_view resource, bool create);

  // Every control law's key and current rate (units per second).
  struct Rate {
    std::string entity;
    std::string resource;
    std::string limit;
    double rate = 0;
  };
  std::vector<Rate> rates() const;

 private:
  struct Adaptive {
    Limit limit;
    std::shared_ptr<AimdLaw> ctl;
    std::string entity;
    std::string resource;
  };
  mutable std::mutex mu_;
  absl::flat_hash_map<std::string, Adaptive> controllers_;
};

}  // namespace admit::detail
