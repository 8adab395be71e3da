#include "aimd_registry.hpp"

#include "pair_key.hpp"

namespace admit::detail {

std::shared_ptr<AimdLaw> AimdRegistry::controller(const Limit& l, std::string_view entity,
                                                  std::string_view resource, bool create) {
  std::string k = pair_key(entity, resource);
  k += '\0';
  k += l.name();
  std::lock_guard g(mu_);
  auto it = controllers_.find(k);
  if (it != controllers_.end() && it->second.limit == l) return it->second.ctl;
  if (!create) return nullptr;
  auto ctl = std::make_shared<AimdLaw>(l.aimd_options());
  controllers_.insert_or_assign(std::move(k),
                                Adaptive{l, ctl, std::string(entity), std::string(resource)});
  return ctl;
}

std::vector<AimdRegistry::Rate> AimdRegistry::rates() const {
  std::vector<Rate> out;
  std::lock_guard g(mu_);
  out.reserve(controllers_.size());
  for (const auto& [key, a] : controllers_) {
    out.push_back(Rate{a.entity, a.resource, a.limit.name(), a.ctl->state().rate});
  }
  return out;
}

}  // namespace admit::detail
