// Result<T>: the value of an operation that can fail in an expected way (bad input, a missing row,
// a backend that is down). The error carries a code, a message for humans and a context map
// (path, offset, imageId, field ...) so that whoever logs or returns it can say exactly what went
// wrong. Exceptions are reserved for programmer errors and start-up failures (STYLE.md).
//
// A Result is a plain value type: not thread-safe to mutate concurrently, safe to copy and move.
#pragma once

#include <cassert>
#include <map>
#include <string>
#include <utility>
#include <variant>

namespace deeplens {

enum class ErrorCode {
  kInvalidArgument,     // the caller's input is wrong; retrying the same input will fail again
  kNotFound,            // the named thing does not exist
  kAlreadyExists,       // a conflicting thing exists
  kFailedPrecondition,  // the system is not in a state where this can be done
  kResourceExhausted,   // a limit was hit (size, pixels, queue)
  kUnsupported,         // a valid request for something we do not implement
  kUnavailable,         // a dependency is down; retrying later may succeed
  kTimeout,             // a deadline passed
  kIoError,             // the filesystem or network failed
  kUnauthenticated,     // no or a bad credential
  kCancelled,           // stopped by shutdown
  kInternal,            // a bug or an invariant broken
};

// Stable snake_case name of a code, e.g. "invalid_argument"; used in logs and API errors.
const char* error_code_name(ErrorCode code);

struct Error {
  ErrorCode code = ErrorCode::kInternal;
  std::string message;
  std::map<std::string, std::string> context;

  Error() = default;
  Error(ErrorCode c, std::string msg) : code(c), message(std::move(msg)) {}

  // Adds a context entry and returns *this so calls chain: Error(...).with("path", p).
  Error& with(std::string key, std::string value) & {
    context[std::move(key)] = std::move(value);
    return *this;
  }
  Error&& with(std::string key, std::string value) && {
    context[std::move(key)] = std::move(value);
    return std::move(*this);
  }

  // "invalid_argument: message (key=value, ...)"
  std::string to_string() const;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}            // NOLINT: implicit by design
  Result(Error error) : v_(std::move(error)) {}         // NOLINT: implicit by design

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { assert(ok()); return std::get<0>(v_); }
  const T& value() const& { assert(ok()); return std::get<0>(v_); }
  T&& value() && { assert(ok()); return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const& { assert(!ok()); return std::get<1>(v_); }
  Error&& error() && { assert(!ok()); return std::get<1>(std::move(v_)); }

 private:
  std::variant<T, Error> v_;
};

// Result<void> spelled Status: success or an Error.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT: implicit by design

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const& { assert(!ok_); return error_; }
  Error&& error() && { assert(!ok_); return std::move(error_); }

 private:
  Error error_;
  bool ok_ = true;
};

inline Status ok_status() { return Status(); }

}  // namespace deeplens
