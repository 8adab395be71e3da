// BPE merge. Two forms with one result: tiktoken's scan for short pieces, a heap for long ones
// (a run of one character is one piece, and the scan would be quadratic in it).
#include "tokens/bpe.hpp"

#include <algorithm>
#include <array>
#include <functional>
#include <limits>
#include <type_traits>
#include <utility>

namespace admit::detail {

namespace {

constexpr std::uint32_t kNoRank = RankTable::kNoRank;

struct ScanPart {
  std::uint32_t start;
  std::uint32_t rank;
};

// tiktoken's _byte_pair_merge: parts[i] is a part's start and the rank of it merged with the
// next part; each round merges the lowest (leftmost on ties) and recomputes its two neighbours.
// Calls part(start, end) for each part left. `parts` has room for piece.size() + 1 (>= 3).
template <class PartFn>
void scan_merge(std::string_view piece, const RankTable& ranks, ScanPart* parts, PartFn&& part) {
  const auto n = static_cast<std::uint32_t>(piece.size());
  std::size_t len = 0;
  for (std::uint32_t i = 0; i + 1 < n; ++i) parts[len++] = {i, ranks.find(piece.substr(i, 2))};
  parts[len++] = {n - 1, kNoRank};
  parts[len++] = {n, kNoRank};
  // The rank of parts i and i+1 merged, then merged with i+2 (read before i+1 is removed).
  const auto rank_after_merge = [&](std::size_t i) {
    if (i + 3 >= len) return kNoRank;
    return ranks.find(piece.substr(parts[i].start, parts[i + 3].start - parts[i].start));
  };
  for (;;) {
    std::uint32_t min_rank = kNoRank;
    std::size_t at = 0;
    for (std::size_t i = 0; i + 1 < len; ++i) {
      if (parts[i].rank < min_rank) {
        min_rank = parts[i].rank;
        at = i;
      }
    }
    if (min_rank == kNoRank) break;
    if (at > 0) parts[at - 1].rank = rank_after_merge(at - 1);
    parts[at].rank = rank_after_merge(at);
    std::copy(parts + at + 2, parts + len, parts + at + 1);
    --len;
  }
  for (std::size_t i = 0; i + 1 < len; ++i) part(parts[i].start, parts[i + 1].start);
}

// The same merges in O(n log n): parts are a linked list over their start offsets, and a heap
// holds (rank, start) of each adjacent pair, the lowest rank on top and of equal ranks the
// leftmost, which is the pair the scan would pick. An entry is stale once its pair changed:
// the pair's part is gone, or its rank is not the pair's rank any more (a pair only grows, and
// two different byte strings never share a rank, so a current entry is recognised exactly).
// Index is std::uint32_t (an entry is then one 64-bit key: rank << 32 | start) or std::size_t.
template <class Index, class PartFn>
void heap_merge(std::string_view piece, const RankTable& ranks, PartFn&& part) {
  constexpr bool kPacked = sizeof(Index) == 4;
  using Key = std::conditional_t<kPacked, std::uint64_t, std::pair<std::uint32_t, Index>>;
  const auto key = [](std::uint32_t rank, Index start) {
    if constexpr (kPacked) {
      return Key{std::uint64_t{rank} << 32 | start};
    } else {
      return Key{rank, start};
    }
  };
  const auto unpack = [](const Key& k) {
    if constexpr (kPacked) {
      return std::pair<std::uint32_t, Index>{static_cast<std::uint32_t>(k >> 32),
                                             static_cast<Index>(k & 0xFFFFFFFFu)};
    } else {
      return k;
    }
  };
  constexpr std::uint32_t kGone = kNoRank - 1;  // a merged-away part (no rank is this large)
  const auto n = static_cast<Index>(piece.size());
  std::vector<Index> next(n);
  std::vector<Index> prev(n);
  std::vector<std::uint32_t> pair_rank(n);
  std::vector<Key> heap;  // a min-heap: std::greater
  heap.reserve(n);
  for (Index i = 0; i < n; ++i) {
    next[i] = i + 1;
    prev[i] = i - 1;  // wraps for 0: never read (i > 0 is checked)
    pair_rank[i] = i + 1 < n ? ranks.find(piece.substr(i, 2)) : kNoRank;
    if (pair_rank[i] != kNoRank) heap.push_back(key(pair_rank[i], i));
  }
  const std::greater<Key> later;
  std::make_heap(heap.begin(), heap.end(), later);
  const std::size_t max_bytes = ranks.max_token_bytes();
  const auto update = [&](Index i) {
    const Index j = next[i];
    std::uint32_t rank = kNoRank;
    if (j < n && next[j] - i <= max_bytes) rank = ranks.find(piece.substr(i, next[j] - i));
    pair_rank[i] = rank;
    if (rank == kNoRank) return;
    heap.push_back(key(rank, i));
    std::push_heap(heap.begin(), heap.end(), later);
  };
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    const auto [rank, i] = unpack(heap.back());
    heap.pop_back();
    if (pair_rank[i] != rank) continue;  // stale (or gone: kGone is no rank)
    const Index j = next[i];
    pair_rank[j] = kGone;
    next[i] = next[j];
    if (next[j] < n) prev[next[j]] = i;
    update(i);
    if (i > 0) update(prev[i]);
  }
  for (Index i = 0; i < n; i = next[i]) part(i, next[i]);
}

template <class PartFn>
void merge(std::string_view piece, const RankTable& ranks, PartFn&& part) {
  if (piece.size() < kHeapMergeMinBytes) {
    std::array<ScanPart, kHeapMergeMinBytes + 1> parts;
    scan_merge(piece, ranks, parts.data(), part);
  } else if (piece.size() < std::numeric_limits<std::uint32_t>::max()) {
    heap_merge<std::uint32_t>(piece, ranks, part);
  } else {
    heap_merge<std::size_t>(piece, ranks, part);
  }
}

}  // namespace

void byte_pair_encode(std::string_view piece, const RankTable& ranks,
                      std::vector<std::uint32_t>& out) {
  if (const std::uint32_t whole = ranks.find(piece); whole != kNoRank) {
    out.push_back(whole);
    return;
  }
  if (piece.size() < 2) return;  // unreachable: every byte is a token (RankTable checks)
  merge(piece, ranks, [&](std::size_t begin, std::size_t end) {
    out.push_back(ranks.find(piece.substr(begin, end - begin)));
  });
}

std::size_t byte_pair_count(std::string_view piece, const RankTable& ranks) {
  if (piece.size() < 2 || ranks.find(piece) != kNoRank) return piece.empty() ? 0 : 1;
  std::size_t count = 0;
  merge(piece, ranks, [&](std::size_t, std::size_t) { ++count; });
  return count;
}

std::vector<std::size_t> merge_by_scan(std::string_view piece, const RankTable& ranks) {
  if (piece.size() < 2) return {0, piece.size()};
  std::vector<ScanPart> parts(piece.size() + 1);  // any length: tests compare the two forms
  std::vector<std::size_t> starts;
  scan_merge(piece, ranks, parts.data(),
             [&](std::size_t begin, std::size_t) { starts.push_back(begin); });
  starts.push_back(piece.size());
  return starts;
}

std::vector<std::size_t> merge_by_heap(std::string_view piece, const RankTable& ranks) {
  std::vector<std::size_t> starts;
  if (piece.size() < 2) return {0, piece.size()};
  heap_merge<std::uint32_t>(piece, ranks,
                            [&](std::size_t begin, std::size_t) { starts.push_back(begin); });
  starts.push_back(piece.size());
  return starts;
}

}  // namespace admit::detail
