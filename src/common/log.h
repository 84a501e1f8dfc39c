// Structured logging: one JSON object per line on stderr,
//   {"ts":"2025-11-28T10:30:00.123Z","level":"info","msg":"stage.completed","imageId":"img_...",...}
// with the pipeline's correlation fields (tenantId, imageId, correlationId) as ordinary fields.
// Built on spdlog; safe to call from any thread once init_logging() has run (before it, spdlog's
// default logger is used with the same line shape).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <variant>

namespace deeplens {

enum class LogLevel { kDebug, kInfo, kWarn, kError };

struct LogOptions {
  LogLevel level = LogLevel::kInfo;  // config log.level: debug|info|warn|error
  bool json = true;                  // config log.format: json|text
};

void init_logging(const LogOptions& options);

// Parses "debug"/"info"/"warn"/"error"; false when unknown.
bool parse_log_level(std::string_view text, LogLevel& out);

struct LogField {
  using Value = std::variant<std::string_view, int64_t, double, bool>;
  std::string_view key;
  Value value;
  LogField(std::string_view k, std::string_view v) : key(k), value(v) {}
  LogField(std::string_view k, const std::string& v) : key(k), value(std::string_view(v)) {}
  LogField(std::string_view k, const char* v) : key(k), value(std::string_view(v)) {}
  LogField(std::string_view k, int v) : key(k), value(int64_t{v}) {}
  LogField(std::string_view k, long v) : key(k), value(int64_t{v}) {}
  LogField(std::string_view k, long long v) : key(k), value(int64_t{v}) {}
  LogField(std::string_view k, unsigned v) : key(k), value(int64_t{v}) {}
  LogField(std::string_view k, unsigned long v) : key(k), value(static_cast<int64_t>(v)) {}
  LogField(std::string_view k, double v) : key(k), value(v) {}
  LogField(std::string_view k, bool v) : key(k), value(v) {}
};

void log(LogLevel level, std::string_view msg, std::initializer_list<LogField> fields = {});
inline void log_debug(std::string_view m, std::initializer_list<LogField> f = {}) { log(LogLevel::kDebug, m, f); }
inline void log_info(std::string_view m, std::initializer_list<LogField> f = {}) { log(LogLevel::kInfo, m, f); }
inline void log_warn(std::string_view m, std::initializer_list<LogField> f = {}) { log(LogLevel::kWarn, m, f); }
inline void log_error(std::string_view m, std::initializer_list<LogField> f = {}) { log(LogLevel::kError, m, f); }

// The body of a log line without timestamp and level: "\"msg\":\"...\",\"k\":v" (exposed for tests).
std::string format_log_fields(std::string_view msg, std::initializer_list<LogField> fields);

}  // namespace deeplens
