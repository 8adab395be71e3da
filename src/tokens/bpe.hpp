// BPE merge: a piece's bytes merged into tokens, lowest rank first, as tiktoken merges them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "tokens/rank_table.hpp"

namespace admit::detail {

/// Pieces of at least this many bytes are merged with a heap (O(n log n)); shorter ones by
/// tiktoken's scan (O(n^2), faster for the few bytes of a word).
inline constexpr std::size_t kHeapMergeMinBytes = 96;

/// Appends the ranks of the tokens of `piece` (non-empty) to `out`, as tiktoken's
/// byte_pair_encode does: the whole piece if it is a token, else the merge of its bytes.
void byte_pair_encode(std::string_view piece, const RankTable& ranks,
                      std::vector<std::uint32_t>& out);

/// The number of tokens byte_pair_encode() gives `piece`.
std::size_t byte_pair_count(std::string_view piece, const RankTable& ranks);

/// The merge alone (tests compare the two): the start of each part of `piece` (at least two
/// bytes) after merging, and piece.size() last. Repeatedly merges the adjacent pair whose
/// concatenation has the lowest rank, the leftmost of equal ones, until no pair is a token.
std::vector<std::size_t> merge_by_scan(std::string_view piece, const RankTable& ranks);
std::vector<std::size_t> merge_by_heap(std::string_view piece, const RankTable& ranks);

}  // namespace admit::detail
