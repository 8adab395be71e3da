// A fresh directory under $TMPDIR (or /tmp) for one test, removed with everything in it.
#pragma once

#include <stdlib.h>  // mkdtemp (POSIX)

#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <system_error>

namespace admit::test {

class TempDir {
 public:
  /// Creates $TMPDIR/admit-<tag>-XXXXXX. @throws std::runtime_error if it cannot.
  explicit TempDir(const std::string& tag = "test") {
    const char* base = std::getenv("TMPDIR");  // NOLINT(concurrency-mt-unsafe): before threads
    std::string tmpl =
        std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/admit-" + tag + "-XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed: " + tmpl);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  /// path() + "/" + name
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace admit::test
