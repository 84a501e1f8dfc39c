#include "common/result.h"

namespace deeplens {

const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument: return "invalid_argument";
    case ErrorCode::kNotFound: return "not_found";
    case ErrorCode::kAlreadyExists: return "already_exists";
    case ErrorCode::kFailedPrecondition: return "failed_precondition";
    case ErrorCode::kResourceExhausted: return "resource_exhausted";
    case ErrorCode::kUnsupported: return "unsupported";
    case ErrorCode::kUnavailable: return "unavailable";
    case ErrorCode::kTimeout: return "timeout";
    case ErrorCode::kIoError: return "io_error";
    case ErrorCode::kUnauthenticated: return "unauthenticated";
    case ErrorCode::kCancelled: return "cancelled";
    case ErrorCode::kInternal: return "internal";
  }
  return "internal";
}

std::string Error::to_string() const {
  std::string out = error_code_name(code);
  out += ": ";
  out += message;
  if (!context.empty()) {
    out += " (";
    bool first = true;
    for (const auto& [k, v] : context) {
      if (!first) out += ", ";
      first = false;
      out += k;
      out += '=';
      out += v;
    }
    out += ')';
  }
  return out;
}

}  // namespace deeplens
