#include "api/http.h"

#include <nlohmann/json.hpp>

namespace deeplens::api {

std::string HttpRequest::header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (k == name) return v;
  return {};
}

HttpResponse error_response(int status, const std::string& code, const std::string& message,
                            const std::map<std::string, std::string>& details) {
  nlohmann::ordered_json j;
  j["error"]["code"] = code;
  j["error"]["message"] = message;
  j["error"]["details"] = nlohmann::json::object();
  for (const auto& [k, v] : details) j["error"]["details"][k] = v;
  return HttpResponse{status, "application/json", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), {}, nullptr};
}

HttpResponse json_response(int status, std::string body) {
  return HttpResponse{status, "application/json", std::move(body), {}, nullptr};
}

std::string url_decode(std::string_view in, bool plus_as_space) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    const char c = in[i];
    if (c == '%' && i + 2 < in.size() && std::isxdigit(static_cast<unsigned char>(in[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(in[i + 2]))) {
      out += static_cast<char>(std::stoi(std::string(in.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else if (c == '+' && plus_as_space) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

std::map<std::string, std::string> parse_query(std::string_view q) {
  std::map<std::string, std::string> out;
  size_t start = 0;
  while (start < q.size()) {
    auto amp = q.find('&', start);
    if (amp == std::string_view::npos) amp = q.size();
    auto kv = q.substr(start, amp - start);
    auto eq = kv.find('=');
    if (!kv.empty())
      out[url_decode(kv.substr(0, eq), true)] = eq == std::string_view::npos ? "" : url_decode(kv.substr(eq + 1), true);
    start = amp + 1;
  }
  return out;
}

std::variant<int, HttpResponse> query_limit(const HttpRequest& req, int fallback, int max) {
  auto it = req.query.find("limit");
  if (it == req.query.end()) return fallback;
  int limit = -1;
  try {
    size_t used = 0;
    limit = std::stoi(it->second, &used);
    if (used != it->second.size()) limit = -1;
  } catch (...) {
    limit = -1;
  }
  if (limit < 1 || limit > max)
    return error_response(400, "INVALID_REQUEST", "limit must be an integer from 1 to " + std::to_string(max),
                          {{"field", "limit"}});
  return limit;
}

}  // namespace deeplens::api
