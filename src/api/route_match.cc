#include "api/route_match.h"

namespace deeplens::api {

bool match_route_pattern(std::string_view p, std::string_view path, std::map<std::string, std::string>& params) {
  std::map<std::string, std::string> found;
  size_t pi = 0, si = 0;
  bool ok = true;
  while (ok && pi < p.size() && si <= path.size()) {
    if (p[pi] == '{') {
      const auto close = p.find('}', pi);
      if (close == std::string_view::npos) return false;
      const std::string name(p.substr(pi + 1, close - pi - 1));
      auto end = path.find('/', si);
      if (end == std::string_view::npos) end = path.size();
      if (end == si) ok = false;
      found[name] = std::string(path.substr(si, end - si));
      si = end;
      pi = close + 1;
    } else if (si < path.size() && p[pi] == path[si]) {
      ++pi;
      ++si;
    } else {
      ok = false;
    }
  }
  if (!ok || pi != p.size() || si != path.size()) return false;
  params = std::move(found);
  return true;
}

}  // namespace deeplens::api
