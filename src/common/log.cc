#include "common/log.h"

#include <nlohmann/json.hpp>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace deeplens {
namespace {

bool g_json = true;

spdlog::level::level_enum to_spdlog(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return spdlog::level::debug;
    case LogLevel::kInfo: return spdlog::level::info;
    case LogLevel::kWarn: return spdlog::level::warn;
    case LogLevel::kError: return spdlog::level::err;
  }
  return spdlog::level::info;
}

void append_json_string(std::string& out, std::string_view s) {
  out += nlohmann::json(std::string(s)).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

bool parse_log_level(std::string_view text, LogLevel& out) {
  if (text == "debug") out = LogLevel::kDebug;
  else if (text == "info") out = LogLevel::kInfo;
  else if (text == "warn" || text == "warning") out = LogLevel::kWarn;
  else if (text == "error") out = LogLevel::kError;
  else return false;
  return true;
}

void init_logging(const LogOptions& options) {
  g_json = options.json;
  spdlog::drop("deeplens");
  auto logger = spdlog::stderr_logger_mt("deeplens");
  if (options.json) {
    logger->set_pattern(R"({"ts":"%Y-%m-%dT%H:%M:%S.%eZ","level":"%l",%v})", spdlog::pattern_time_type::utc);
  } else {
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %-5l %v", spdlog::pattern_time_type::utc);
  }
  logger->set_level(to_spdlog(options.level));
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

std::string format_log_fields(std::string_view msg, std::initializer_list<LogField> fields) {
  std::string out = "\"msg\":";
  append_json_string(out, msg);
  for (const auto& f : fields) {
    out += ',';
    append_json_string(out, f.key);
    out += ':';
    std::visit(
        [&](const auto& v) {
          using V = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<V, std::string_view>) {
            append_json_string(out, v);
          } else if constexpr (std::is_same_v<V, bool>) {
            out += v ? "true" : "false";
          } else {
            out += nlohmann::json(v).dump();
          }
        },
        f.value);
  }
  return out;
}

void log(LogLevel level, std::string_view msg, std::initializer_list<LogField> fields) {
  const auto lvl = to_spdlog(level);
  if (!spdlog::default_logger_raw()->should_log(lvl)) return;
  if (g_json) {
    spdlog::default_logger_raw()->log(lvl, format_log_fields(msg, fields));
  } else {
    std::string line(msg);
    for (const auto& f : fields) {
      line += ' ';
      line += f.key;
      line += '=';
      std::visit(
          [&](const auto& v) {
            using V = std::decay_t<decltype(v)>;
            if constexpr (std::is_same_v<V, std::string_view>) line += v;
            else if constexpr (std::is_same_v<V, bool>) line += v ? "true" : "false";
            else line += std::to_string(v);
          },
          f.value);
    }
    spdlog::default_logger_raw()->log(lvl, line);
  }
}

}  // namespace deeplens
