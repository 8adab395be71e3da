// Provider profiles: the published per-model rate limits of an LLM provider for one usage tier,
// read from profiles/<provider>.yaml and applied to a Limiter (go-ratelimit's DefaultProfiles /
// AddProvider, with the numbers in data files instead of code). 0 means unlimited.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "admit/core/limit.hpp"

namespace admit {

class Limiter;

/// One model's limits. Every field is a non-negative count; 0 = unlimited (not published).
struct ModelQuota {
  std::int64_t rpm = 0;   ///< requests per minute (token bucket)
  std::int64_t tpm = 0;   ///< tokens per minute (token bucket)
  std::int64_t rpd = 0;   ///< requests per calendar day
  std::int64_t itpm = 0;  ///< input tokens per minute (Anthropic)
  std::int64_t otpm = 0;  ///< output tokens per minute (Anthropic)

  bool operator==(const ModelQuota&) const = default;
};

/// What to_limits() does with a zero (unlimited) count.
enum class ZeroQuota : std::uint8_t {
  skip,       ///< no limit of that name
  unlimited,  ///< an unlimited limit of that name, so amounts naming it are still accepted
};

/**
 * The limits of `q`: "rpm", "tpm", "itpm", "otpm" as Limit::per_minute (burst = the per-minute
 * amount) and "rpd" as Limit::daily resetting at 00:00 in `day_time_zone`, in that field order
 * (rpm, tpm, rpd, itpm, otpm). Zeros are skipped, or with ZeroQuota::unlimited kept as unlimited
 * limits: Limiter::try_acquire denies amounts that name no limit (unknown_limit), so a caller
 * that sends the same Amounts{{"rpm", 1}, {"rpd", 1}, {"tpm", n}} to every model needs them.
 * @throws ValidationError for a negative count, an unknown time zone or a count too large.
 */
std::vector<Limit> to_limits(const ModelQuota& q, std::string_view day_time_zone = "UTC",
                             ZeroQuota zeros = ZeroQuota::skip);

/// One provider's limits for one tier, as loaded from a profile file.
struct ProviderProfile {
  std::string provider;       ///< e.g. "openai"
  std::string source;         ///< where the numbers come from (URL and what was read)
  std::string retrieved;      ///< date the file was written, YYYY-MM-DD
  std::string tier;           ///< the tier loaded, e.g. "tier-1"
  std::string day_time_zone;  ///< IANA zone of the rpd day ("UTC" when the file has none)
  std::map<std::string, ModelQuota> models;  ///< model (admit resource name) -> quota
};

/**
 * Reads a profile file (YAML: provider, source, retrieved, optional day_time_zone, tiers) and
 * returns tier `tier`. The whole file is validated, not just that tier: unknown keys, negative
 * or non-integer counts, bad names, bad dates and duplicate keys are errors.
 * @throws ValidationError whose field is the YAML path (e.g. "tiers.tier-1.gpt-4o.rpm"), whose
 *         value is the offending value, and whose message ends with "(file:line:col)"; for an
 *         unknown tier, field "tier" and a message listing the file's tiers.
 */
ProviderProfile load_profile(const std::filesystem::path& file, std::string_view tier);

/// The tiers of a profile file, in file order. Validates the file like load_profile().
std::vector<std::string> profile_tiers(const std::filesystem::path& file);

/**
 * The directory of the shipped profiles, the first of:
 *   1. $ADMIT_PROFILES_DIR, if set and not empty (whether or not it exists);
 *   2. the installed profiles, <datadir>/admit/profiles of the prefix admit was built for
 *      (/usr/local/share/admit/profiles by default), if it exists;
 *   3. share/admit/profiles next to the bin/ directory of the running program (an install under
 *      another prefix: cmake --install --prefix P, the .deb's /usr/bin), if it exists;
 *   4. the profiles/ of the source tree the library was built from, if it exists;
 *   5. else 2., which does not exist.
 */
std::filesystem::path default_profiles_dir();

/// Providers with a profile in `dir` (the stems of its *.yaml files), sorted.
std::vector<std::string> profile_providers(
    const std::filesystem::path& dir = default_profiles_dir());

/**
 * load_profile(dir / (provider + ".yaml"), tier), checking that the file names that provider.
 * @throws ValidationError (field "provider") for a malformed or unknown provider, listing the
 *         providers found in `dir`; otherwise as load_profile().
 */
ProviderProfile load_profile_by_name(std::string_view provider, std::string_view tier,
                                     const std::filesystem::path& dir = default_profiles_dir());

/**
 * go-ratelimit's AddProvider: for every model of `p`, Limiter::set_limits(model,
 * to_limits(quota, p.day_time_zone, ZeroQuota::unlimited)), replacing that resource's limits.
 * Every model thus has all five names (rpm, tpm, rpd, itpm, otpm), the unpublished ones
 * unlimited, so one Amounts shape fits every model and provider. Models not in `p` are left
 * alone. Thread-safe like Limiter::set_limits; each model is replaced atomically, the profile as
 * a whole is not.
 * @throws ValidationError before changing anything if some model's name or limits are invalid.
 */
void add_provider(Limiter& limiter, const ProviderProfile& p);

}  // namespace admit
