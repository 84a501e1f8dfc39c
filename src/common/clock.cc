#include "common/clock.h"

#include <cstdio>

namespace deeplens {

using namespace std::chrono;

Timestamp SystemClock::now() const { return time_point_cast<milliseconds>(system_clock::now()); }

std::string format_iso8601(Timestamp t) {
  const auto day = floor<days>(t);
  const year_month_day ymd{day};
  const hh_mm_ss hms{t - day};
  char buf[40];
  const auto ms = hms.subseconds().count();
  if (ms == 0) {
    std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02ld:%02ld:%02lldZ", int(ymd.year()),
                  unsigned(ymd.month()), unsigned(ymd.day()), long(hms.hours().count()),
                  long(hms.minutes().count()), static_cast<long long>(hms.seconds().count()));
  } else {
    std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02ld:%02ld:%02lld.%03lldZ", int(ymd.year()),
                  unsigned(ymd.month()), unsigned(ymd.day()), long(hms.hours().count()),
                  long(hms.minutes().count()), static_cast<long long>(hms.seconds().count()),
                  static_cast<long long>(ms));
  }
  return buf;
}

namespace {

bool read_digits(std::string_view s, size_t& pos, size_t n, int& out) {
  if (pos + n > s.size()) return false;
  int v = 0;
  for (size_t i = 0; i < n; ++i) {
    const char c = s[pos + i];
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  pos += n;
  out = v;
  return true;
}

bool expect(std::string_view s, size_t& pos, char c) {
  if (pos < s.size() && s[pos] == c) {
    ++pos;
    return true;
  }
  return false;
}

}  // namespace

Result<Timestamp> parse_iso8601(std::string_view s) {
  auto bad = [&](const char* why) {
    return Error(ErrorCode::kInvalidArgument,
                 std::string("not an ISO-8601 UTC timestamp (") + why +
                     "), expected e.g. 2025-11-28T10:30:00Z")
        .with("value", std::string(s));
  };
  size_t p = 0;
  int y, mo, d, h, mi, sec;
  if (!read_digits(s, p, 4, y) || !expect(s, p, '-') || !read_digits(s, p, 2, mo) ||
      !expect(s, p, '-') || !read_digits(s, p, 2, d))
    return bad("date");
  if (!(expect(s, p, 'T') || expect(s, p, 't'))) return bad("missing 'T'");
  if (!read_digits(s, p, 2, h) || !expect(s, p, ':') || !read_digits(s, p, 2, mi) ||
      !expect(s, p, ':') || !read_digits(s, p, 2, sec))
    return bad("time");
  int ms = 0;
  if (expect(s, p, '.')) {
    size_t digits = 0;
    while (p < s.size() && s[p] >= '0' && s[p] <= '9') {
      if (digits < 3) ms = ms * 10 + (s[p] - '0');
      ++digits;
      ++p;
    }
    if (digits == 0) return bad("empty fraction");
    for (size_t i = digits; i < 3; ++i) ms *= 10;
  }
  int offset_min = 0;
  if (expect(s, p, 'Z') || expect(s, p, 'z')) {
  } else if (p < s.size() && (s[p] == '+' || s[p] == '-')) {
    const int sign = s[p] == '+' ? 1 : -1;
    ++p;
    int oh, om;
    if (!read_digits(s, p, 2, oh) || !expect(s, p, ':') || !read_digits(s, p, 2, om))
      return bad("offset");
    offset_min = sign * (oh * 60 + om);
  } else {
    return bad("missing time zone, use 'Z'");
  }
  if (p != s.size()) return bad("trailing characters");
  const year_month_day ymd{year{y}, month{unsigned(mo)}, day{unsigned(d)}};
  if (!ymd.ok() || h > 23 || mi > 59 || sec > 60) return bad("out of range");
  const auto t = sys_days(ymd) + hours(h) + minutes(mi) + seconds(sec) + milliseconds(ms) -
                 minutes(offset_min);
  // An offset can move 0000-01-01 or 9999-12-31 out of the years format_iso8601 writes in four
  // digits; such a time would not parse again once written.
  const year utc_year = year_month_day{floor<days>(t)}.year();
  if (utc_year < year{0} || utc_year > year{9999}) return bad("out of range in UTC");
  return Timestamp(time_point_cast<milliseconds>(t));
}

}  // namespace deeplens
