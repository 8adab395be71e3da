// hiredis glue: commands are encoded by redisFormatCommandArgv; replies are parsed by the
// hiredis reader straight into admit::redis::Reply objects (custom object functions), so
// there is no intermediate redisReply tree to copy.
#include "resp.hpp"

#include <hiredis/hiredis.h>

#include <cstring>
#include <limits>
#include <new>
#include <stdexcept>
#include <vector>

namespace admit::redis::detail {

namespace {

constexpr std::size_t kMaxCommandBytes = std::size_t{512} << 20;

// Objects below the root live inside their parent's `elements` (sized by create_array), so
// only the root is allocated, and freeing the root frees the tree: hiredis calls freeObject
// on the root only.
Reply* attach(const redisReadTask* task, Reply::Type type) noexcept {
  Reply* r = nullptr;
  if (task->parent != nullptr) {
    auto* parent = static_cast<Reply*>(task->parent->obj);
    if (task->idx < 0 || static_cast<std::size_t>(task->idx) >= parent->elements.size()) {
      return nullptr;
    }
    r = &parent->elements[static_cast<std::size_t>(task->idx)];
  } else {
    r = new (std::nothrow) Reply;
    if (r == nullptr) return nullptr;
  }
  r->type = type;
  return r;
}

void release_root(const redisReadTask* task, Reply* r) noexcept {
  if (task->parent == nullptr) delete r;
}

void* create_string(const redisReadTask* task, char* str, std::size_t len) noexcept {
  Reply::Type type = Reply::Type::string;
  if (task->type == REDIS_REPLY_STATUS) type = Reply::Type::status;
  if (task->type == REDIS_REPLY_ERROR) type = Reply::Type::error;
  Reply* r = attach(task, type);
  if (r == nullptr) return nullptr;
  try {
    r->str.assign(str, len);
  } catch (...) {
    release_root(task, r);
    return nullptr;
  }
  return r;
}

void* create_array(const redisReadTask* task, int elements) noexcept {
  if (elements < 0) return nullptr;
  Reply* r = attach(task, Reply::Type::array);
  if (r == nullptr) return nullptr;
  try {
    r->elements.resize(static_cast<std::size_t>(elements));
  } catch (...) {
    release_root(task, r);
    return nullptr;
  }
  return r;
}

void* create_integer(const redisReadTask* task, long long value) noexcept {
  Reply* r = attach(task, Reply::Type::integer);
  if (r != nullptr) r->integer = value;
  return r;
}

void* create_nil(const redisReadTask* task) noexcept { return attach(task, Reply::Type::nil); }

void free_object(void* p) noexcept { delete static_cast<Reply*>(p); }

redisReplyObjectFunctions kReplyFunctions = {create_string, create_array, create_integer,
                                             create_nil, free_object};

}  // namespace

void Command::Free::operator()(char* p) const noexcept { redisFreeCommand(p); }

Command Command::encode(std::span<const std::string_view> args) {
  std::vector<const char*> argv;
  std::vector<std::size_t> lens;
  argv.reserve(args.size());
  lens.reserve(args.size());
  std::size_t total = 0;
  for (std::string_view a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
    total += a.size() + 32;  // "$<len>\r\n...\r\n" per argument, generously
  }
  if (total > kMaxCommandBytes ||
      args.size() > static_cast<std::size_t>(std::numeric_limits<int>::max())) {
    throw std::length_error("redis command larger than 512 MiB");
  }
  char* out = nullptr;
  int n = redisFormatCommandArgv(&out, static_cast<int>(args.size()), argv.data(), lens.data());
  if (n < 0 || out == nullptr) throw std::bad_alloc();
  Command c;
  c.data_.reset(out);
  c.size_ = static_cast<std::size_t>(n);
  return c;
}

bool Command::set_evalsha_sha1(std::string_view sha1) {
  // "*<argc>\r\n$7\r\nEVALSHA\r\n$40\r\n<sha1>\r\n..."
  constexpr std::string_view kHead = "\r\n$7\r\nEVALSHA\r\n$40\r\n";
  constexpr std::size_t kMaxArgcDigits = 12;
  const std::string_view s(data_.get(), size_);
  const auto at = s.substr(0, kMaxArgcDigits + kHead.size()).find(kHead);
  if (sha1.size() != 40 || at == std::string_view::npos || s.empty() || s[0] != '*' ||
      at + kHead.size() + 40 > size_) {
    return false;
  }
  std::memcpy(data_.get() + at + kHead.size(), sha1.data(), sha1.size());
  return true;
}

ReplyReader::ReplyReader() { reset(); }

ReplyReader::~ReplyReader() {
  if (reader_ != nullptr) redisReaderFree(reader_);
}

void ReplyReader::reset() {
  if (reader_ != nullptr) redisReaderFree(reader_);
  reader_ = redisReaderCreateWithFunctions(&kReplyFunctions);
  if (reader_ == nullptr) throw std::bad_alloc();
  error_.clear();
}

bool ReplyReader::feed(const char* data, std::size_t size) {
  if (!error_.empty()) return false;
  if (redisReaderFeed(reader_, data, size) != REDIS_OK) {
    error_ = reader_->errstr[0] != '\0' ? reader_->errstr : "RESP reader error";
    return false;
  }
  return true;
}

std::unique_ptr<Reply> ReplyReader::next() {
  if (!error_.empty()) return nullptr;
  void* reply = nullptr;
  if (redisReaderGetReply(reader_, &reply) != REDIS_OK) {
    error_ = reader_->errstr[0] != '\0' ? reader_->errstr : "RESP reader error";
    return nullptr;
  }
  return std::unique_ptr<Reply>(static_cast<Reply*>(reply));
}

}  // namespace admit::redis::detail
