// SlotTable (src/store/slot_table.hpp), MemoryStore's table of states, against a std::map
// driven by the same random operations: inserts, finds, erases, erase_if (pruning), reserve.
#include "store/slot_table.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <map>
#include <random>
#include <utility>
#include <vector>

namespace {

using admit::detail::Fp;
using admit::detail::Slot;
using admit::detail::SlotTable;

using Key = std::pair<std::uint64_t, std::uint64_t>;

// Few distinct low bits, so probe runs are long and wrap around the array's end.
Fp key_of(std::uint64_t n, std::uint64_t salt) {
  return Fp{(n * 0x9E3779B97F4A7C15ULL) ^ salt, (std::uint64_t{1} << 48) | n};
}

void expect_same(SlotTable& t, const std::map<Key, Slot>& model, std::uint64_t universe,
                 std::uint64_t salt) {
  ASSERT_EQ(t.size(), model.size());
  for (std::uint64_t n = 0; n < universe; ++n) {
    const Fp k = key_of(n, salt);
    const auto found = model.find({k.lo, k.hi});
    Slot* s = t.find(k);
    if (found == model.end()) {
      EXPECT_EQ(s, nullptr) << "key " << n;
    } else {
      ASSERT_NE(s, nullptr) << "key " << n;
      EXPECT_EQ(s->a, found->second.a) << "key " << n;
      EXPECT_EQ(s->b, found->second.b) << "key " << n;
    }
  }
}

// Verifies that every operation leaves the table holding exactly what the model holds.
TEST(SlotTable, AgreesWithAMapUnderRandomOperations) {
  for (const std::uint64_t seed : {1U, 2U, 3U}) {
    std::printf("seed %llu\n", static_cast<unsigned long long>(seed));
    std::mt19937_64 rng(seed);
    const std::uint64_t salt = rng();
    constexpr std::uint64_t kUniverse = 3000;
    SlotTable t;
    t.set_huge_pages(false);
    std::map<Key, Slot> model;
    for (int step = 0; step < 40000; ++step) {
      const Fp k = key_of(rng() % kUniverse, salt);
      const int what = static_cast<int>(rng() % 100);
      if (what < 55) {
        Slot& s = t.try_emplace(k);
        Slot& m = model[{k.lo, k.hi}];
        ASSERT_EQ(s.a, m.a);
        s.a = m.a = static_cast<std::int64_t>(rng() % 1000) + 1;
        s.b = m.b = step;
      } else if (what < 90) {
        EXPECT_EQ(t.erase(k), model.erase({k.lo, k.hi}) == 1);
      } else if (what < 99) {
        Slot* s = t.find(k);
        EXPECT_EQ(s != nullptr, model.contains({k.lo, k.hi}));
      } else {
        const std::int64_t cut = static_cast<std::int64_t>(rng() % 1000);
        const std::size_t erased =
            t.erase_if([cut](const Fp&, const Slot& s) { return s.a < cut; });
        const std::size_t expected =
            std::erase_if(model, [cut](const auto& kv) { return kv.second.a < cut; });
        EXPECT_EQ(erased, expected);
        expect_same(t, model, kUniverse, salt);
      }
      if (::testing::Test::HasFailure()) return;
    }
    expect_same(t, model, kUniverse, salt);
  }
}

// Verifies that reserve(n) keeps every state where it is while n keys are inserted (the
// store's pass 1 holds pointers to states it created), and that a table pruned to few keys
// gives memory back.
TEST(SlotTable, ReserveKeepsStatesInPlaceAndPruningShrinks) {
  SlotTable t;
  t.set_huge_pages(false);
  for (std::uint64_t n = 0; n < 1000; ++n) t.try_emplace(key_of(n, 7)).a = 1;
  t.reserve(t.size() + 100);
  std::vector<Slot*> held;
  for (std::uint64_t n = 1000; n < 1100; ++n) held.push_back(&t.try_emplace(key_of(n, 7)));
  for (std::uint64_t n = 1000; n < 1100; ++n) EXPECT_EQ(t.find(key_of(n, 7)), held[n - 1000]);
  const std::size_t big = t.bytes();
  EXPECT_EQ(t.erase_if([](const Fp& f, const Slot&) { return (f.hi & 0xffff) >= 10; }), 1090U);
  EXPECT_EQ(t.size(), 10U);
  EXPECT_LT(t.bytes(), big);
  for (std::uint64_t n = 0; n < 10; ++n) EXPECT_NE(t.find(key_of(n, 7)), nullptr);
  EXPECT_EQ(t.find(key_of(10, 7)), nullptr);
}

}  // namespace
