// SlotTable: MemoryStore's table of rate and window states, keyed by 128-bit fingerprints.
// Open addressing with linear probing over 32-byte entries (fingerprint and state side by
// side, two to a cache line), so finding a key reads the line its entry is on and, rarely,
// the next one: one cache miss for a random key where a table with separate control bytes
// (abseil's) takes two. Internal header: not installed, not part of the API.
#pragma once

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

#include "kernel.hpp"

namespace admit::detail {

/// A key's identity in MemoryStore: `hi` carries the namespace id (1 or more) in its top 16
/// bits, so no fingerprint has hi == 0 and that value marks an empty entry.
struct Fp {
  std::uint64_t lo;  // no initialisers: arrays of Fp stay uninitialised on the hot path
  std::uint64_t hi;
  bool operator==(const Fp& o) const { return lo == o.lo && hi == o.hi; }
};

class SlotTable {
 public:
  struct Entry {
    Fp key;
    Slot value;
  };
  static_assert(sizeof(Entry) == 32);

  /// Huge pages (the default): ask the kernel to back arrays of 2 MiB or more with
  /// transparent huge pages (madvise MADV_HUGEPAGE), which saves a TLB miss on most random
  /// lookups.
  /// Set before the first insert.
  void set_huge_pages(bool on) { huge_pages_ = on; }
  SlotTable() = default;
  ~SlotTable() { release(entries_, cap_); }
  SlotTable(const SlotTable&) = delete;
  SlotTable& operator=(const SlotTable&) = delete;

  std::size_t size() const { return size_; }
  std::size_t capacity() const { return cap_; }
  /// Bytes of the entry array.
  std::size_t bytes() const { return cap_ * sizeof(Entry); }

  Slot* find(const Fp& k) {
    if (cap_ == 0) return nullptr;
    for (std::size_t i = k.lo & mask_;; i = (i + 1) & mask_) {
      Entry& e = entries_[i];
      if (e.key == k) return &e.value;
      if (e.key.hi == 0) return nullptr;
    }
  }
  bool contains(const Fp& k) { return find(k) != nullptr; }

  /// The state of `k`, inserted as a zero Slot if absent. Pointers to states stay valid until
  /// the next insert that grows the table (see reserve) or the next erase.
  Slot& try_emplace(const Fp& k) {
    if (cap_ != 0) {
      for (std::size_t i = k.lo & mask_;; i = (i + 1) & mask_) {
        Entry& e = entries_[i];
        if (e.key == k) return e.value;
        if (e.key.hi == 0) {
          if (size_ + 1 <= limit_) return occupy(e, k);
          break;
        }
      }
    }
    rehash(grown(size_ + 1));
    return occupy(entries_[free_index(k)], k);
  }

  /// Room for `n` keys in all: until then no insert moves an entry.
  void reserve(std::size_t n) {
    if (n > limit_) rehash(grown(n));
  }

  bool erase(const Fp& k) {
    if (cap_ == 0) return false;
    for (std::size_t i = k.lo & mask_;; i = (i + 1) & mask_) {
      if (entries_[i].key == k) {
        erase_at(i);
        return true;
      }
      if (entries_[i].key.hi == 0) return false;
    }
  }

  /// Erases every entry for which `pred(key, value)` holds; shrinks a table left at less than
  /// an eighth full. @return entries erased.
  template <class Pred>
  std::size_t erase_if(Pred pred) {
    if (size_ == 0) return 0;
    // Start after an empty entry, so every run of entries (a probe sequence) is met from its
    // start: an erase shifts later entries of the run back into positions not yet checked
    // (the one just erased, checked again), never into ones already checked.
    std::size_t start = 0;
    while (entries_[start].key.hi != 0) ++start;
    std::size_t erased = 0;
    for (std::size_t n = 0; n < cap_;) {
      const std::size_t i = (start + 1 + n) & mask_;
      Entry& e = entries_[i];
      if (e.key.hi != 0 && pred(e.key, e.value)) {
        erase_at(i);
        ++erased;
        continue;  // position i holds what moved back (or nothing): check it again
      }
      ++n;
    }
    if (cap_ > kMinCapacity && size_ < cap_ / 8) rehash(grown(2 * size_));
    return erased;
  }

  /// Brings the entry `k` would be found at into the cache. Safe without the table's lock
  /// (a stale array or mask makes it a wasted hint, never a fault: prefetches do not fault).
  void prefetch(const Fp& k) const {
    const Entry* base = hint_base_.load(std::memory_order_relaxed);
    const std::size_t mask = hint_mask_.load(std::memory_order_relaxed);
    if (base != nullptr) __builtin_prefetch(base + (k.lo & mask), 1, 3);
  }

 private:
  static constexpr std::size_t kMinCapacity = 16;
  static constexpr std::size_t kHugePage = std::size_t{2} << 20;

  Slot& occupy(Entry& e, const Fp& k) {
    e.key = k;
    e.value = Slot{};
    ++size_;
    return e.value;
  }

  // The first empty entry of k's probe sequence (k absent, room left).
  std::size_t free_index(const Fp& k) const {
    std::size_t i = k.lo & mask_;
    while (entries_[i].key.hi != 0) i = (i + 1) & mask_;
    return i;
  }

  // Backward-shift deletion: entries after i in its run whose probe would pass i move back,
  // so no tombstones are left and lookups stop at the first empty entry.
  void erase_at(std::size_t i) {
    for (std::size_t j = (i + 1) & mask_;; j = (j + 1) & mask_) {
      Entry& e = entries_[j];
      if (e.key.hi == 0) break;
      const std::size_t home = e.key.lo & mask_;
      if (((j - home) & mask_) >= ((j - i) & mask_)) {
        entries_[i] = e;
        i = j;
      }
    }
    entries_[i].key.hi = 0;
    --size_;
  }

  // The capacity for n keys at most 3/4 full (a power of two).
  static std::size_t grown(std::size_t n) {
    return std::max(kMinCapacity, std::bit_ceil((n * 4 + 2) / 3));
  }

  void rehash(std::size_t cap) {
    Entry* old = entries_;
    const std::size_t old_cap = cap_;
    entries_ = allocate(cap);
    cap_ = cap;
    mask_ = cap - 1;
    limit_ = cap / 4 * 3;
    for (std::size_t i = 0; i < old_cap; ++i) {
      if (old[i].key.hi != 0) entries_[free_index(old[i].key)] = old[i];
    }
    hint_base_.store(entries_, std::memory_order_relaxed);
    hint_mask_.store(mask_, std::memory_order_relaxed);
    release(old, old_cap);
  }

  // Arrays of 2 MiB or more are mapped on their own (zero pages the kernel fills as they are
  // touched, given back whole when freed; malloc would keep them in its heap), aligned to
  // 2 MiB so huge pages can back them; smaller ones come from malloc, cleared.
  Entry* allocate(std::size_t cap) const {
    const std::size_t bytes = cap * sizeof(Entry);
    if (bytes < kHugePage) {
      void* p = std::aligned_alloc(64, bytes);
      if (p == nullptr) throw std::bad_alloc();
      std::memset(p, 0, bytes);
      return static_cast<Entry*>(p);
    }
    const std::size_t span = bytes + kHugePage;  // room to align the start
    void* m = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) throw std::bad_alloc();
    const auto at = reinterpret_cast<std::uintptr_t>(m);
    const std::uintptr_t start = (at + kHugePage - 1) & ~(kHugePage - 1);
    if (start > at) munmap(m, start - at);
    munmap(reinterpret_cast<void*>(start + bytes), at + span - start - bytes);
    void* p = reinterpret_cast<void*>(start);
    if (huge_pages_) (void)madvise(p, bytes, MADV_HUGEPAGE);  // a hint: else 4 KiB pages
    return static_cast<Entry*>(p);
  }
  static void release(Entry* p, std::size_t cap) {
    if (p == nullptr) return;
    const std::size_t bytes = cap * sizeof(Entry);
    if (bytes < kHugePage) {
      std::free(p);
    } else {
      munmap(p, bytes);
    }
  }

  Entry* entries_ = nullptr;
  std::size_t cap_ = 0;
  std::size_t mask_ = 0;
  std::size_t size_ = 0;
  std::size_t limit_ = 0;  // the most entries before the table grows
  bool huge_pages_ = true;
  // Copies of entries_ and mask_ for prefetch(), which reads them without the lock.
  std::atomic<const Entry*> hint_base_{nullptr};
  std::atomic<std::size_t> hint_mask_{0};
};

}  // namespace admit::detail
