// Route patterns: "/api/v1/images/{id}/status" matches "/api/v1/images/img_1/status" with
// {"id": "img_1"}. A "{name}" placeholder matches one non-empty path segment (no '/'); every
// other character matches itself. Split out of ApiService so that it can be tested and fuzzed
// alone (tests/fuzz/fuzz_http.cc).
//
// A pure function; thread-safe.
#pragma once

#include <map>
#include <string>
#include <string_view>

namespace deeplens::api {

// Whether path (decoded, without the query) matches pattern. On a match, params holds exactly the
// placeholders' values (what it held before is replaced); otherwise params is left as it was.
// A pattern with a '{' that is never closed matches nothing.
bool match_route_pattern(std::string_view pattern, std::string_view path, std::map<std::string, std::string>& params);

}  // namespace deeplens::api
