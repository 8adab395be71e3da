#include "admit/adapt/profiles.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <system_error>
#include <utility>

#include "admit/core/error.hpp"
#include "admit/limiter.hpp"
#include "common/yaml_reader.hpp"

namespace admit {

namespace {

// ---- helpers shared by to_limits() and the parser ----

using detail::show;

/// "a, b, c"
std::string join(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& n : names) {
    if (!out.empty()) out += ", ";
    out += n;
  }
  return out.empty() ? "none" : out;
}

/// The limit named `name` ("rpm", "tpm", "rpd", "itpm" or "otpm") for count `n` (0 = unlimited).
/// Errors about the count name the limit (field `name`, value n), not Limit's own fields.
Limit limit_for(std::string_view name, std::int64_t n, std::string_view day_time_zone) {
  if (n < 0) {
    throw ValidationError(std::string(name), std::to_string(n), "must be >= 0 (0 means unlimited)");
  }
  try {
    if (name == "rpd") {
      return Limit::daily(std::string(name), n, "00:00", std::string(day_time_zone));
    }
    return Limit::per_minute(std::string(name), n);
  } catch (const ValidationError& e) {
    if (e.field() == "time_zone") throw;
    throw ValidationError(std::string(name), std::to_string(n), e.reason());
  }
}

constexpr std::string_view kQuotaKeys[] = {"rpm", "tpm", "rpd", "itpm", "otpm"};

template <typename Quota>  // ModelQuota or const ModelQuota
auto& field_of(Quota& q, std::string_view key) {
  if (key == "rpm") return q.rpm;
  if (key == "tpm") return q.tpm;
  if (key == "rpd") return q.rpd;
  if (key == "itpm") return q.itpm;
  return q.otpm;
}

// ---- the profile file parser ----

struct ParsedTier {
  std::string name;
  std::map<std::string, ModelQuota> models;
};

struct ParsedFile {
  std::string provider;
  std::string source;
  std::string retrieved;
  std::string day_time_zone = "UTC";
  std::vector<ParsedTier> tiers;
};

/// Errors: field = YAML path, value = the offending value, message ends with (file:line:col).
class Parser : detail::YamlReader {
 public:
  explicit Parser(std::string file) : YamlReader(std::move(file), "profile") {}

  ParsedFile run(const std::string& text) const {
    YAML::Node root;
    try {
      root = YAML::Load(text);
    } catch (const YAML::Exception& e) {
      detail::fail_at(detail::where(source_, e.mark), "profile", source_,
                      "YAML syntax error: " + e.msg);
    }
    if (!root.IsMap()) {
      fail(root, "profile", show(root),
           "expected a mapping with provider, source, retrieved, day_time_zone and tiers");
    }
    ParsedFile out;
    bool have_provider = false;
    bool have_source = false;
    bool have_retrieved = false;
    bool have_tiers = false;
    YAML::Node tiers;
    for (const Entry& e : entries(root, "")) {
      if (e.key == "provider") {
        out.provider = provider_name(e.value);
        have_provider = true;
      } else if (e.key == "source") {
        out.source = string(e.value, "source");
        have_source = true;
      } else if (e.key == "retrieved") {
        out.retrieved = date(e.value, "retrieved");
        have_retrieved = true;
      } else if (e.key == "day_time_zone") {
        out.day_time_zone = time_zone(e.value, "day_time_zone");
      } else if (e.key == "tiers") {
        tiers = e.value;
        have_tiers = true;
      } else {
        fail(e.key_node, e.key, e.key,
             "unknown key (expected provider, source, retrieved, day_time_zone or tiers)");
      }
    }
    if (!have_provider) fail(root, "provider", "", "missing (the provider's name, e.g. openai)");
    if (!have_source) fail(root, "source", "", "missing (where the numbers come from)");
    if (!have_retrieved) fail(root, "retrieved", "", "missing (date written, YYYY-MM-DD)");
    if (!have_tiers) fail(root, "tiers", "", "missing (a mapping tier -> model -> quota)");

    for (const Entry& t : entries(tiers, "tiers")) {
      const std::string path = "tiers." + t.key;
      check_name(t.key_node, path, "tier", t.key);
      ParsedTier tier{t.key, {}};
      for (const Entry& m : entries(t.value, path)) {
        const std::string mpath = path + "." + m.key;
        check_name(m.key_node, mpath, "model", m.key);
        tier.models.emplace(m.key, quota(m.value, mpath));
      }
      if (tier.models.empty())
        fail(t.value, path, show(t.value), "a tier needs at least one model");
      out.tiers.push_back(std::move(tier));
    }
    if (out.tiers.empty()) fail(tiers, "tiers", show(tiers), "needs at least one tier");
    return out;
  }

 private:
  std::string string(const YAML::Node& n, const std::string& path) const {
    if (!n.IsScalar() || n.Scalar().empty()) fail(n, path, show(n), "expected a non-empty string");
    return n.Scalar();
  }

  std::string provider_name(const YAML::Node& n) const {
    std::string s = string(n, "provider");
    const bool ok =
        s.size() <= 64 && std::all_of(s.begin(), s.end(), [](char c) {
          return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
        });
    if (!ok) fail(n, "provider", s, "expected lower-case letters, digits, '-' or '_'");
    return s;
  }

  std::string date(const YAML::Node& n, const std::string& path) const {
    const std::string s = string(n, path);
    auto digits = [&](std::size_t from, std::size_t len) {
      int v = 0;
      for (std::size_t i = from; i < from + len; ++i) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
      }
      return v;
    };
    bool ok = s.size() == 10 && s[4] == '-' && s[7] == '-';
    if (ok) {
      const int y = digits(0, 4);
      const int m = digits(5, 2);
      const int d = digits(8, 2);
      ok = y >= 0 && m >= 0 && d >= 0 &&
           std::chrono::year_month_day{std::chrono::year{y},
                                       std::chrono::month{static_cast<unsigned>(m)},
                                       std::chrono::day{static_cast<unsigned>(d)}}
               .ok();
    }
    if (!ok) fail(n, path, s, "expected a date YYYY-MM-DD");
    return s;
  }

  std::string time_zone(const YAML::Node& n, const std::string& path) const {
    std::string tz = string(n, path);
    try {
      (void)Limit::daily("rpd", 1, "00:00", tz);
    } catch (const ValidationError& e) {
      fail(n, path, tz, e.reason());
    }
    return tz;
  }

  std::int64_t count(const YAML::Node& n, const std::string& path) const {
    if (!n.IsScalar()) fail(n, path, show(n), "expected a non-negative integer");
    const std::string& s = n.Scalar();
    const bool digits =
        !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (!digits) {
      const bool negative = s.size() > 1 && s[0] == '-' &&
                            std::all_of(s.begin() + 1, s.end(),
                                        [](char c) { return (c >= '0' && c <= '9') || c == '.'; });
      fail(n, path, s,
           negative ? "must not be negative (0 means unlimited)"
                    : "expected a non-negative integer (0 means unlimited)");
    }
    if (s.size() > 1 && s[0] == '0') {
      fail(n, path, s, "leading zeros are not allowed (YAML may read them as octal)");
    }
    std::int64_t v = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || end != s.data() + s.size()) fail(n, path, s, "too large");
    return v;
  }

  ModelQuota quota(const YAML::Node& n, const std::string& path) const {
    if (!n.IsMap()) fail(n, path, show(n), "expected a mapping like {rpm: 500, tpm: 30000}");
    ModelQuota q;
    for (const Entry& e : entries(n, path)) {
      const std::string fpath = path + "." + e.key;
      const bool known =
          std::find(std::begin(kQuotaKeys), std::end(kQuotaKeys), e.key) != std::end(kQuotaKeys);
      if (!known)
        fail(e.key_node, fpath, e.key, "unknown key (expected rpm, tpm, rpd, itpm or otpm)");
      const std::int64_t v = count(e.value, fpath);
      if (v != 0) {
        try {
          (void)limit_for(e.key, v, "UTC");
        } catch (const ValidationError& err) {
          fail(e.value, fpath, e.value.Scalar(), err.reason());
        }
      }
      field_of(q, e.key) = v;
    }
    return q;
  }
};

ParsedFile parse_file(const std::filesystem::path& file) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec)) {
    throw ValidationError(
        "profile file", file.string(),
        std::filesystem::exists(file, ec) ? "not a regular file" : "no such file");
  }
  std::ifstream in(file, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  if (!in || in.bad()) throw ValidationError("profile file", file.string(), "cannot be read");
  return Parser(file.string()).run(text.str());
}

}  // namespace

// ------------------------------------------------------------------------------ public API

std::vector<Limit> to_limits(const ModelQuota& q, std::string_view day_time_zone, ZeroQuota zeros) {
  std::vector<Limit> out;
  for (const std::string_view key : kQuotaKeys) {
    const std::int64_t n = field_of(q, key);
    if (n != 0 || zeros == ZeroQuota::unlimited) out.push_back(limit_for(key, n, day_time_zone));
  }
  return out;
}

ProviderProfile load_profile(const std::filesystem::path& file, std::string_view tier) {
  ParsedFile f = parse_file(file);
  for (ParsedTier& t : f.tiers) {
    if (t.name != tier) continue;
    ProviderProfile p;
    p.provider = std::move(f.provider);
    p.source = std::move(f.source);
    p.retrieved = std::move(f.retrieved);
    p.tier = std::move(t.name);
    p.day_time_zone = std::move(f.day_time_zone);
    p.models = std::move(t.models);
    return p;
  }
  std::vector<std::string> known;
  for (const ParsedTier& t : f.tiers) known.push_back(t.name);
  throw ValidationError("tier", std::string(tier),
                        "unknown tier in " + file.string() + " (known tiers: " + join(known) + ")");
}

std::vector<std::string> profile_tiers(const std::filesystem::path& file) {
  std::vector<std::string> out;
  for (ParsedTier& t : parse_file(file).tiers) out.push_back(std::move(t.name));
  return out;
}

std::filesystem::path default_profiles_dir() {
  // Read once per call; no other code in admit sets this variable.
  if (const char* env = std::getenv("ADMIT_PROFILES_DIR"); env != nullptr && *env != '\0') {
    return env;
  }
  // The compiled-in directories (CMakeLists.txt), the first that exists.
  std::error_code ec;
  const auto exists = [&ec](const std::filesystem::path& dir) {
    return std::filesystem::is_directory(dir, ec);
  };
#ifdef ADMIT_INSTALLED_PROFILES_DIR
  if (exists(ADMIT_INSTALLED_PROFILES_DIR)) return ADMIT_INSTALLED_PROFILES_DIR;
#endif
#ifdef ADMIT_PROFILES_FROM_BINDIR
  // Installed under another prefix than the one built for (cmake --install --prefix, the .deb):
  // share/admit/profiles next to the bin/ of the running program.
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    std::filesystem::path dir = (exe.parent_path() / ADMIT_PROFILES_FROM_BINDIR).lexically_normal();
    if (exists(dir)) return dir;
  }
#endif
#ifdef ADMIT_SOURCE_PROFILES_DIR
  if (exists(ADMIT_SOURCE_PROFILES_DIR)) return ADMIT_SOURCE_PROFILES_DIR;
#endif
#ifdef ADMIT_INSTALLED_PROFILES_DIR
  return ADMIT_INSTALLED_PROFILES_DIR;  // none exists: errors name where they should be
#else
  return "profiles";
#endif
}

std::vector<std::string> profile_providers(const std::filesystem::path& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::filesystem::path& p = it->path();
    std::error_code ec2;
    if (p.extension() == ".yaml" && it->is_regular_file(ec2)) out.push_back(p.stem().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

ProviderProfile load_profile_by_name(std::string_view provider, std::string_view tier,
                                     const std::filesystem::path& dir) {
  const bool ok = !provider.empty() && provider.size() <= 64 &&
                  std::all_of(provider.begin(), provider.end(), [](char c) {
                    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
                  });
  if (!ok) {
    throw ValidationError("provider", std::string(provider),
                          "expected lower-case letters, digits, '-' or '_' (known providers: " +
                              join(profile_providers(dir)) + ")");
  }
  const std::filesystem::path file = dir / (std::string(provider) + ".yaml");
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec)) {
    throw ValidationError(
        "provider", std::string(provider),
        "no profile " + file.string() + " (known providers: " + join(profile_providers(dir)) + ")");
  }
  ProviderProfile p = load_profile(file, tier);
  if (p.provider != provider) {
    throw ValidationError("provider", p.provider,
                          "profile " + file.string() + " is for provider '" + p.provider +
                              "', not '" + std::string(provider) + "'");
  }
  return p;
}

void add_provider(Limiter& limiter, const ProviderProfile& p) {
  const std::string_view tz = p.day_time_zone.empty() ? std::string_view("UTC") : p.day_time_zone;
  std::vector<std::pair<std::string, std::vector<Limit>>> plan;
  plan.reserve(p.models.size());
  for (const auto& [model, quota] : p.models) {
    validate_name("resource", model);
    plan.emplace_back(model, to_limits(quota, tz, ZeroQuota::unlimited));
  }
  for (auto& [model, limits] : plan) limiter.set_limits(std::move(model), std::move(limits));
}

}  // namespace admit
