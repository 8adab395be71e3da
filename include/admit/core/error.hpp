// Exceptions thrown at API edges. Denials in the hot path are Decision values, not exceptions.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include "admit/core/decision.hpp"

namespace admit {

/// `s` with every byte that is not printable ASCII written as \xNN, cut after `max` bytes
/// of `s` ("..." appended): safe to quote in an error message, a JSON string or a log line
/// (no NUL that would end a C string, no invalid UTF-8, no control characters).
std::string printable(std::string_view s, std::size_t max = 200);

/// Base of every exception admit throws.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Invalid configuration or argument; names the offending field and value.
class ValidationError : public Error {
 public:
  /// what() is "invalid FIELD 'VALUE': WHY", FIELD and VALUE through printable(); field()
  /// and value() keep them as given.
  ValidationError(std::string field, std::string value, const std::string& why);
  const std::string& field() const { return field_; }
  const std::string& value() const { return value_; }
  /// Why the value is invalid, without the "invalid F 'V': " prefix of what().
  const std::string& reason() const { return reason_; }

 private:
  std::string field_;
  std::string value_;
  std::string reason_;
};

/// acquire() could not get capacity before its deadline, or the request can never fit.
class RateLimitExceeded : public Error {
 public:
  explicit RateLimitExceeded(Decision d);
  const Decision& decision() const { return decision_; }
  Micros retry_after() const { return decision_.retry_after; }
  const std::vector<Violation>& violations() const { return decision_.violations; }
  /// The violation with the longest retry_after (the one that decides the wait).
  const Violation* primary_violation() const;

 private:
  Decision decision_;
};

/// The store could not be reached and the policy is fail-closed.
class StoreUnavailable : public Error {
 public:
  using Error::Error;
};

/// A store file written by a newer version of admit (its schema version is above the one this
/// build supports); it is left untouched.
class IncompatibleSchema : public Error {
 public:
  IncompatibleSchema(std::string path, int version, int supported)
      : Error("store file '" + path + "' has schema version " + std::to_string(version) +
              "; this build supports version " + std::to_string(supported) + " and older"),
        path_(std::move(path)),
        version_(version),
        supported_(supported) {}
  const std::string& path() const { return path_; }
  int version() const { return version_; }
  int supported() const { return supported_; }

 private:
  std::string path_;
  int version_ = 0;
  int supported_ = 0;
};

/// A lease operation after the lease ended (committed, rolled back or expired).
class LeaseError : public Error {
 public:
  using Error::Error;
};

/// A durable lease the store does not hold (any more): never acquired, ended (perhaps by
/// another process), expired, or changed by another process since it was read (see
/// Op::lease_guard). Nothing was changed.
class LeaseNotFound : public LeaseError {
 public:
  using LeaseError::LeaseError;
};

}  // namespace admit
