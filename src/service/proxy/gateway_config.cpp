#include "service/proxy/gateway_config.hpp"

#include <algorithm>
#include <stdexcept>
#include <utility>

#include "common/http/client.hpp"
#include "common/yaml_reader.hpp"
#include "service/auth.hpp"

namespace admit::service {

namespace {

using detail::show;

class GatewayReader : detail::YamlReader {
 public:
  explicit GatewayReader(std::string source) : YamlReader(std::move(source), "gateway") {}

  GatewayConfig run(const YAML::Node& node) {
    GatewayConfig g;
    g.enabled = true;
    bool has_upstreams = false;
    for (const Entry& e : entries(node, "gateway")) {
      const std::string path = "gateway." + e.key;
      if (e.key == "namespace") {
        g.ns = scalar(e.value, path);
        check_name(e.value, path, "namespace", g.ns);
      } else if (e.key == "callers") {
        g.callers = callers(e.value, path);
      } else if (e.key == "entity_header") {
        g.entity_header = scalar(e.value, path);
        if (g.entity_header.empty()) fail(e.value, path, "", "must not be empty");
      } else if (e.key == "deadline_ms") {
        g.deadline = std::chrono::milliseconds(integer(e.value, path, 1, 3'600'000));
      } else if (e.key == "default_max_tokens") {
        g.default_max_tokens = integer(e.value, path, 1, 10'000'000);
      } else if (e.key == "max_body_bytes") {
        g.max_body_bytes =
            static_cast<std::size_t>(integer(e.value, path, 1024, 256LL * 1024 * 1024));
      } else if (e.key == "upstreams") {
        g.upstreams = upstreams(e.value, path);
        has_upstreams = true;
      } else {
        fail(e.key_node, path, e.key,
             "unknown key (expected namespace, callers, entity_header, deadline_ms, "
             "default_max_tokens, max_body_bytes or upstreams)");
      }
    }
    if (!has_upstreams) fail(node, "gateway.upstreams", show(node), "missing key");
    return g;
  }

 private:
  std::vector<GatewayCaller> callers(const YAML::Node& n, const std::string& path) const {
    if (!n.IsSequence()) fail(n, path, show(n), "expected a list of {key, entity}");
    std::vector<GatewayCaller> out;
    for (std::size_t i = 0; i < n.size(); ++i) {
      const std::string p = path + "[" + std::to_string(i) + "]";
      GatewayCaller c;
      bool has_key = false;
      for (const Entry& e : entries(n[i], p)) {
        if (e.key == "key") {
          c.key = scalar(e.value, p + ".key");  // ${ENV}: keys are secrets
          if (c.key.size() < kMinTokenLength) {
            fail(e.value, p + ".key", "(hidden)",
                 "at least " + std::to_string(kMinTokenLength) + " characters");
          }
          for (const char ch : c.key) {
            if (ch <= ' ' || ch > '~') {  // what an Authorization header carries after "Bearer "
              fail(e.value, p + ".key", "(hidden)", "printable ASCII without spaces");
            }
          }
          has_key = true;
        } else if (e.key == "entity") {
          c.entity = scalar(e.value, p + ".entity");
          check_name(e.value, p + ".entity", "entity", c.entity);
        } else {
          fail(e.key_node, p + "." + e.key, e.key, "unknown key (expected key or entity)");
        }
      }
      if (!has_key) fail(n[i], p + ".key", show(n[i]), "missing key");
      if (c.entity.empty()) fail(n[i], p + ".entity", show(n[i]), "missing key");
      for (const GatewayCaller& o : out) {
        if (o.key == c.key) fail(n[i], p + ".key", "(hidden)", "the same key twice");
      }
      out.push_back(std::move(c));
    }
    return out;
  }

  std::vector<GatewayUpstream> upstreams(const YAML::Node& n, const std::string& path) const {
    if (!n.IsSequence() || n.size() == 0) {
      fail(n, path, show(n), "expected a non-empty list of upstreams");
    }
    std::vector<GatewayUpstream> out;
    for (std::size_t i = 0; i < n.size(); ++i) {
      const std::string p = path + "[" + std::to_string(i) + "]";
      GatewayUpstream u;
      bool has_url = false;
      for (const Entry& e : entries(n[i], p)) {
        const std::string ep = p + "." + e.key;
        if (e.key == "name") {
          u.name = scalar(e.value, ep);
          check_name(e.value, ep, "entity", u.name);
        } else if (e.key == "base_url") {
          u.base_url = scalar(e.value, ep);
          try {
            (void)http::parse_base_url(u.base_url);
          } catch (const std::invalid_argument& x) {
            fail(e.value, ep, u.base_url, x.what());
          }
          has_url = true;
        } else if (e.key == "api_key") {
          u.api_key = scalar(e.value, ep);
        } else if (e.key == "dialect") {
          const std::string d = scalar(e.value, ep);
          const std::optional<Provider> p2 = provider_from_string(d);
          if (!p2) fail(e.value, ep, d, "unknown provider dialect (e.g. openai, anthropic)");
          u.dialect = *p2;
        } else if (e.key == "models") {
          if (!e.value.IsSequence()) fail(e.value, ep, show(e.value), "expected a list");
          for (std::size_t j = 0; j < e.value.size(); ++j) {
            const std::string mp = ep + "[" + std::to_string(j) + "]";
            std::string m = scalar(e.value[j], mp);
            check_name(e.value[j], mp, "resource", m);
            u.models.push_back(std::move(m));
          }
        } else if (e.key == "ca_file") {
          u.ca_file = scalar(e.value, ep);
        } else if (e.key == "max_concurrent") {
          u.max_concurrent = static_cast<std::size_t>(integer(e.value, ep, 1, 100'000));
        } else if (e.key == "max_attempts") {
          u.max_attempts = static_cast<int>(integer(e.value, ep, 1, 10));
        } else {
          fail(e.key_node, ep, e.key,
               "unknown key (expected name, base_url, api_key, dialect, models, ca_file, "
               "max_concurrent or max_attempts)");
        }
      }
      if (u.name.empty()) fail(n[i], p + ".name", show(n[i]), "missing key");
      if (!has_url) fail(n[i], p + ".base_url", show(n[i]), "missing key");
      for (const GatewayUpstream& o : out) {
        if (o.name == u.name) fail(n[i], p + ".name", u.name, "two upstreams of this name");
      }
      out.push_back(std::move(u));
    }
    return out;
  }
};

}  // namespace

GatewayConfig parse_gateway_config(const YAML::Node& node, const std::string& source) {
  return GatewayReader(source).run(node);
}

}  // namespace admit::service
