#include "admit/store/store.hpp"

#include <stdexcept>
#include <utility>

#include "admit/core/error.hpp"

namespace admit {

OwnedOp::OwnedOp(const Op& o)
    : ns_(*o.ns),
      group_(o.group),
      lease_record_(o.lease_record),
      lease_record_next_(o.lease_record_next),
      op_(o) {
  names_.reserve(2 * o.keys.size());  // no reallocation: keys_ views these strings
  for (const KeyParts& k : o.keys) {
    names_.emplace_back(k.entity);
    names_.emplace_back(k.resource);
  }
  keys_.reserve(o.keys.size());
  for (std::size_t i = 0; i < o.keys.size(); ++i) {
    keys_.push_back(KeyParts{names_[2 * i], names_[2 * i + 1]});
  }
  handles_.assign(o.handles.begin(), o.handles.end());
  limits_.reserve(o.items.size());  // no reallocation: items_ point into limits_ and rates_
  rates_.reserve(o.items.size());
  items_.assign(o.items.begin(), o.items.end());
  for (OpItem& it : items_) {
    it.limit = &limits_.emplace_back(*it.limit);
    if (it.rate != nullptr) it.rate = &rates_.emplace_back(*it.rate);
  }
  op_.ns = &ns_;
  op_.group = group_;
  op_.keys = keys_;
  op_.items = items_;
  op_.handles = handles_;
  op_.lease_record = lease_record_;
  op_.lease_record_next = lease_record_next_;
}

void Store::apply_async(const Op& op, std::span<ItemResult> results, ApplyCallback done) {
  bool ok = false;
  std::exception_ptr error;
  try {
    ok = apply(op, results);
  } catch (...) {
    error = std::current_exception();
  }
  done(ok, std::move(error));
}

void check_batch(std::span<const Op> ops, std::span<const std::span<ItemResult>> results,
                 std::span<const bool> ok, std::span<const std::exception_ptr> errors) {
  if (results.size() != ops.size() || ok.size() != ops.size() || errors.size() != ops.size()) {
    throw std::invalid_argument("apply_batch: one results span, ok and error per op");
  }
  for (std::size_t i = 0; i < ops.size(); ++i) {
    if (results[i].size() < ops[i].items.size()) {
      throw std::invalid_argument("apply_batch: a results span shorter than its op's items");
    }
  }
}

void Store::apply_batch(std::span<const Op> ops, std::span<const std::span<ItemResult>> results,
                        std::span<bool> ok, std::span<std::exception_ptr> errors) {
  check_batch(ops, results, ok, errors);
  for (std::size_t i = 0; i < ops.size(); ++i) {
    ok[i] = false;
    errors[i] = nullptr;
    try {
      ok[i] = apply(ops[i], results[i]);
    } catch (...) {
      errors[i] = std::current_exception();
    }
  }
}

std::uint64_t Store::append_audit(const Namespace& ns, AuditEvent event) {
  (void)ns;
  validate_audit_event(event);
  throw StoreUnavailable("store '" + name() + "' keeps no audit log");
}

std::vector<AuditEvent> Store::read_audit(const Namespace& ns, const AuditQuery& query) {
  (void)ns;
  validate_audit_query(query);
  return {};
}

std::string_view to_string(ConfigKind k) {
  switch (k) {
    case ConfigKind::system:
      return "system";
    case ConfigKind::resource:
      return "resource";
    case ConfigKind::entity_default:
      return "entity_default";
    case ConfigKind::entity:
      return "entity";
    case ConfigKind::parent:
      return "parent";
  }
  return "unknown";
}

void validate_config_key(const ConfigKey& key) {
  const bool uses_entity = key.kind == ConfigKind::entity ||
                           key.kind == ConfigKind::entity_default || key.kind == ConfigKind::parent;
  const bool uses_resource = key.kind == ConfigKind::entity || key.kind == ConfigKind::resource;
  if (key.kind > ConfigKind::parent) {
    throw ValidationError("config kind", std::to_string(static_cast<int>(key.kind)),
                          "is not a ConfigKind");
  }
  const std::string kind(to_string(key.kind));
  if (uses_entity) {
    validate_name("entity", key.entity);
  } else if (!key.entity.empty()) {
    throw ValidationError("entity", std::string(key.entity), "must be empty for " + kind);
  }
  if (uses_resource) {
    validate_name("resource", key.resource);
  } else if (!key.resource.empty()) {
    throw ValidationError("resource", std::string(key.resource), "must be empty for " + kind);
  }
}

void validate_config_read(std::span<const ConfigKey> keys,
                          std::span<const std::optional<std::string>> values) {
  if (values.size() != keys.size()) {
    throw ValidationError("values", std::to_string(values.size()),
                          "must have one entry per key (" + std::to_string(keys.size()) + ")");
  }
  for (const ConfigKey& k : keys) validate_config_key(k);
}

}  // namespace admit
