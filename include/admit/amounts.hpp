// Amounts: how much of each named limit one call consumes, e.g. {{"rpm", 1}, {"tpm", 1200}}.
#pragma once

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace admit {

/// One named amount.
struct Amount {
  std::string name;
  std::int64_t value = 0;
};

/// A small list of named amounts; later entries with the same name add up.
class Amounts {
 public:
  Amounts() = default;
  Amounts(std::initializer_list<std::pair<std::string_view, std::int64_t>> init) {
    items_.reserve(init.size());
    for (const auto& [n, v] : init) add(n, v);
  }
  void add(std::string_view name, std::int64_t value) {
    for (auto& a : items_) {
      if (a.name == name) {
        a.value += value;
        return;
      }
    }
    items_.push_back(Amount{std::string(name), value});
  }
  /// @return the amount for `name`, or `fallback` if absent.
  std::int64_t get(std::string_view name, std::int64_t fallback = 0) const {
    for (const auto& a : items_) {
      if (a.name == name) return a.value;
    }
    return fallback;
  }
  bool contains(std::string_view name) const {
    return std::any_of(items_.begin(), items_.end(),
                       [&](const Amount& a) { return a.name == name; });
  }
  auto begin() const { return items_.begin(); }
  auto end() const { return items_.end(); }
  std::size_t size() const { return items_.size(); }
  bool empty() const { return items_.empty(); }

 private:
  std::vector<Amount> items_;
};

}  // namespace admit
