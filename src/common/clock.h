// Time for the whole system comes through a Clock so tests can control it (STYLE.md).
// Timestamps are UTC with millisecond precision, the precision of the events' ISO-8601 fields.
//
// SystemClock is thread-safe. ManualClock is thread-safe (atomic) and only moves when told.
#pragma once

#include <atomic>
#include <chrono>
#include <string>
#include <string_view>

#include "common/result.h"

namespace deeplens {

using Timestamp = std::chrono::time_point<std::chrono::system_clock, std::chrono::milliseconds>;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual Timestamp now() const = 0;
};

class SystemClock final : public Clock {
 public:
  Timestamp now() const override;
};

class ManualClock final : public Clock {
 public:
  explicit ManualClock(Timestamp start) : ms_(start.time_since_epoch().count()) {}
  Timestamp now() const override { return Timestamp(std::chrono::milliseconds(ms_.load())); }
  void advance(std::chrono::milliseconds d) { ms_ += d.count(); }
  void set(Timestamp t) { ms_ = t.time_since_epoch().count(); }

 private:
  std::atomic<long long> ms_;
};

// "2025-11-28T10:30:00Z", or "2025-11-28T10:30:00.123Z" when the milliseconds are not zero.
std::string format_iso8601(Timestamp t);

// Parses an RFC 3339 / ISO-8601 date-time with a 'Z' or numeric offset ("+02:00") and optional
// fraction (kept to milliseconds). Rejects anything else with kInvalidArgument.
Result<Timestamp> parse_iso8601(std::string_view text);

}  // namespace deeplens
