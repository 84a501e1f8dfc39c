// Fuzzes HTTP request parsing and routing as the server does it (api/http_server.cc): the bytes of
// one connection go through Boost.Beast's request parser with the server's limits (header_limit,
// then the route's body limit, keep-alive requests one after another), then our url_decode /
// parse_query (api/http.h) and route matching (api/route_match.h) over the server's route table.
// Invariants:
//  - the parse does not depend on how the bytes arrive: fed all at once and fed in small reads,
//    the same requests (method, target, headers, body) reach the handler and the connection ends
//    the same way;
//  - a body that is read is no longer than its Content-Length or the bytes sent;
//  - url_decode never grows its input, decodes every percent-encoded string back to its bytes, and
//    leaves text without '%' alone ('+' as space only in queries); a parsed query re-encoded
//    parses to the same map;
//  - route matching agrees with a segment-by-segment reference matcher, and a match's parameters
//    put back into the pattern give the path; a pattern filled with any segment matches it.
#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "api/http.h"
#include "api/http_server.h"
#include "api/route_match.h"
#include "fuzz_check.h"

// Boost's assertions go through this handler in the fuzz build (BOOST_ENABLE_ASSERT_HANDLER, set
// for this target only): every one aborts as a crash, except one known to be wrong. Beast 1.81's
// parse_chunk_header asserts `n >= 5` where 3 bytes can legitimately be all it has (a final
// "0\r\n" whose trailer has not arrived; fuzzing found it with a chunked body split across
// reads); the code after the assert answers need_more correctly. Beast fixed the assert in
// boostorg/beast#2861 (Boost 1.86). Release builds compile Boost's asserts out.
namespace boost {
void assertion_failed(char const* expr, char const* function, char const* file, long line) {
  const std::string_view e(expr), f(file);
  if (e == "n >= 5" && f.size() >= 16 && f.substr(f.size() - 16) == "basic_parser.ipp") return;
  std::fprintf(stderr, "%s:%ld: %s: Boost assertion failed: %s\n", file, line, function, expr);
  std::abort();
}
void assertion_failed_msg(char const* expr, char const* msg, char const* function, char const* file, long line) {
  std::fprintf(stderr, "%s:%ld: %s: Boost assertion failed: %s (%s)\n", file, line, function, expr, msg);
  std::abort();
}
}  // namespace boost

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using deeplens::api::match_route_pattern;
using deeplens::api::parse_query;
using deeplens::api::url_decode;

// A SyncReadStream over the fuzz input, handing out at most `chunk` bytes per read.
class MemoryStream {
 public:
  MemoryStream(std::string_view bytes, size_t chunk) : bytes_(bytes), chunk_(chunk) {}

  template <typename MutableBufferSequence>
  size_t read_some(const MutableBufferSequence& buffers, boost::system::error_code& ec) {
    if (pos_ == bytes_.size()) {
      ec = net::error::eof;
      return 0;
    }
    const size_t n = net::buffer_copy(buffers, net::buffer(bytes_.data() + pos_, std::min(chunk_, bytes_.size() - pos_)));
    pos_ += n;
    ec = {};
    return n;
  }
  size_t consumed() const { return pos_; }

  template <typename MutableBufferSequence>
  size_t read_some(const MutableBufferSequence& buffers) {
    boost::system::error_code ec;
    const size_t n = read_some(buffers, ec);
    if (ec) throw boost::system::system_error(ec);
    return n;
  }

 private:
  std::string_view bytes_;
  size_t chunk_;
  size_t pos_ = 0;
};

struct Route {
  std::string method;
  std::string pattern;
  bool spool;
};

// The server's route table, as kRouteSpecs in api/api_service.cc has it (linking ApiService would
// bring in every module; `deeplens routes` prints the real one).
const std::vector<Route>& routes() {
  static const std::vector<Route> table = {
      {"POST", "/api/v1/images/upload", true},
      {"GET", "/api/v1/images", false},
      {"GET", "/api/v1/images/{id}", false},
      {"DELETE", "/api/v1/images/{id}", false},
      {"GET", "/api/v1/images/{id}/status", false},
      {"GET", "/api/v1/images/{id}/content", false},
      {"GET", "/api/v1/images/{id}/thumbnail", false},
      {"POST", "/api/v1/search", true},
      {"GET", "/healthz", false},
      {"GET", "/readyz", false},
      {"GET", "/metrics", false},
  };
  return table;
}

std::vector<std::string_view> split_segments(std::string_view s) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (true) {
    const size_t slash = s.find('/', start);
    out.push_back(s.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start));
    if (slash == std::string_view::npos) return out;
    start = slash + 1;
  }
}

// Reference matcher: the table's placeholders are whole segments ("/images/{id}/status").
bool reference_match(std::string_view pattern, std::string_view path) {
  const auto p = split_segments(pattern), s = split_segments(path);
  if (p.size() != s.size()) return false;
  for (size_t i = 0; i < p.size(); ++i) {
    const bool placeholder = p[i].size() >= 2 && p[i].front() == '{' && p[i].back() == '}';
    if (placeholder ? s[i].empty() : p[i] != s[i]) return false;
  }
  return true;
}

std::string fill(std::string_view pattern, const std::map<std::string, std::string>& params) {
  std::string out;
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] != '{') {
      out += pattern[i];
      continue;
    }
    const size_t close = pattern.find('}', i);
    const auto it = params.find(std::string(pattern.substr(i + 1, close - i - 1)));
    out += it == params.end() ? std::string("\x01missing\x01") : it->second;
    i = close;
  }
  return out;
}

std::string percent_encode(std::string_view s, bool all) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    const bool plain = !all && (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~');
    if (plain) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    }
  }
  return out;
}

void check_url_decode(std::string_view s) {
  for (bool plus : {false, true}) {
    FUZZ_CHECK(url_decode(s, plus).size() <= s.size(), "url_decode grew its input");
    FUZZ_CHECK(url_decode(percent_encode(s, true), plus) == s, "percent-encoded bytes do not decode back");
  }
  if (s.find('%') == std::string_view::npos) {
    FUZZ_CHECK(url_decode(s, false) == s, "text without '%' changed");
    std::string spaced(s);
    for (auto& c : spaced)
      if (c == '+') c = ' ';
    FUZZ_CHECK(url_decode(s, true) == spaced, "'+' is not a space in a query");
  }
}

void check_query(std::string_view q) {
  const auto parsed = parse_query(q);
  std::string rebuilt;
  for (const auto& [k, v] : parsed) {
    if (!rebuilt.empty()) rebuilt += '&';
    rebuilt += percent_encode(k, false) + "=" + percent_encode(v, false);
  }
  FUZZ_CHECK(parse_query(rebuilt) == parsed, ("re-encoded query parses differently: " + rebuilt).c_str());
}

void check_routes(std::string_view path) {
  for (const auto& r : routes()) {
    std::map<std::string, std::string> params{{"stale", "value"}};
    const bool matched = match_route_pattern(r.pattern, path, params);
    FUZZ_CHECK(matched == reference_match(r.pattern, path), (r.pattern + " vs " + std::string(path)).c_str());
    if (!matched) {
      FUZZ_CHECK(params.size() == 1 && params.count("stale"), "a failed match changed params");
      continue;
    }
    for (const auto& [name, value] : params)
      FUZZ_CHECK(!value.empty() && value.find('/') == std::string::npos, "a parameter is not one segment");
    FUZZ_CHECK(fill(r.pattern, params) == path, "parameters do not rebuild the path");
  }
  // Any non-empty segment (here: the path without its slashes) fills a placeholder.
  std::string segment;
  for (char c : path)
    if (c != '/') segment += c;
  if (segment.empty()) return;
  for (const auto& r : routes()) {
    const auto open = r.pattern.find('{');
    if (open == std::string::npos) continue;
    const auto close = r.pattern.find('}', open);
    const std::string name = r.pattern.substr(open + 1, close - open - 1);
    const std::string filled = fill(r.pattern, {{name, segment}});
    std::map<std::string, std::string> params;
    FUZZ_CHECK(match_route_pattern(r.pattern, filled, params), ("no match for " + filled).c_str());
    FUZZ_CHECK(params.size() == 1 && params[name] == segment, "wrong parameter");
  }
}

struct Request {
  std::string method, target, body;
  std::vector<std::pair<std::string, std::string>> headers;
  size_t header_bytes = 0;  // request line and fields, as read off the stream
  bool operator==(const Request&) const = default;
};

struct Outcome {
  std::vector<Request> requests;
  // Why the connection ended, as the server tells it apart: "header refused" (431, or closed
  // without an answer: which of the two, and Beast's error code, can depend on where the reads
  // split a malformed header), "413", "closed" (a broken or cut body, or the end of the stream),
  // "close" (the client asked to).
  std::string end;
  std::string error;          // Beast's message, for the report only
  bool header_limit = false;  // ended by http::error::header_limit
  bool operator==(const Outcome& o) const { return requests == o.requests && end == o.end; }
};

// Whether two parses of the same bytes agree. One difference is Beast's (1.74), not ours: once the
// request line is in, header_limit bounds the fields alone, so a header up to a request line
// longer than the limit passes when its request line arrives whole in the first read, and is
// refused (431) when the first read cuts the request line. Past such a request the two parses
// may go on apart.
bool agree(const Outcome& a, const Outcome& b, uint32_t header_limit) {
  if (a == b) return true;
  size_t k = 0;
  while (k < a.requests.size() && k < b.requests.size() && a.requests[k] == b.requests[k]) ++k;
  auto lenient = [&](const Outcome& x, const Outcome& y) {
    return x.requests.size() > k && x.requests[k].header_bytes > header_limit && y.requests.size() == k &&
           y.header_limit;
  };
  return lenient(a, b) || lenient(b, a);
}

// One connection as HttpServer::Impl::Session reads it: headers (header_limit), admission (the
// route's body limit; an authenticated client is assumed), the body, then the next request while
// keep-alive holds.
Outcome serve(std::string_view bytes, size_t chunk) {
  const deeplens::api::HttpServerOptions options;
  MemoryStream stream(bytes, chunk);
  beast::flat_buffer buffer;
  Outcome out;
  for (int n = 0; n < 32; ++n) {
    http::request_parser<http::empty_body> header;
    header.header_limit(options.max_header_bytes);
    header.body_limit(std::numeric_limits<std::uint64_t>::max());
    beast::error_code ec;
    const size_t start = stream.consumed() - buffer.size();
    http::read_header(stream, buffer, header, ec);
    if (ec) {
      out.header_limit = ec == http::error::header_limit;
      out.end = ec == http::error::end_of_stream ? "closed" : "header refused";
      out.error = ec.message();
      return out;
    }
    const auto& msg = header.get();
    Request req;
    req.header_bytes = stream.consumed() - buffer.size() - start;
    req.method = std::string(msg.method_string());
    req.target = std::string(msg.target());
    FUZZ_CHECK(!req.method.empty() && !req.target.empty(), "empty method or target");
    for (const auto& f : msg) req.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));

    const auto q = req.target.find('?');
    const std::string path = url_decode(std::string_view(req.target).substr(0, q), false);
    check_url_decode(req.target);
    if (q != std::string::npos) check_query(std::string_view(req.target).substr(q + 1));
    check_routes(path);

    bool spool = false;
    for (const auto& r : routes()) {
      std::map<std::string, std::string> params;
      if (r.method == req.method && match_route_pattern(r.pattern, path, params)) {
        spool = r.spool;
        break;
      }
    }
    const uint64_t limit = spool ? options.max_body_bytes : options.max_small_body_bytes;
    const auto length = header.content_length();
    if (length && *length > limit) {
      out.requests.push_back(std::move(req));
      out.end = "413";
      return out;
    }
    const bool keep_alive = msg.keep_alive();
    if (!header.is_done()) {
      http::request_parser<http::string_body> text(std::move(header));
      text.body_limit(limit);
      http::read(stream, buffer, text, ec);
      if (ec) {
        out.requests.push_back(std::move(req));
        out.end = ec == http::error::body_limit ? "413" : "closed";
        out.error = ec.message();
        return out;
      }
      req.body = std::move(text.get().body());
      FUZZ_CHECK(req.body.size() <= bytes.size(), "body longer than the input");
      FUZZ_CHECK(!length || req.body.size() == *length, "body length differs from Content-Length");
    }
    out.requests.push_back(std::move(req));
    if (!keep_alive) {
      out.end = "close";
      return out;
    }
  }
  out.end = "request limit of the fuzzer";
  return out;
}

std::string describe(const Outcome& o) {
  std::string out = std::to_string(o.requests.size()) + " requests (";
  for (const auto& r : o.requests) out += r.method + " " + r.target + " body " + std::to_string(r.body.size()) + "; ";
  return out + ") then '" + o.end + "' (" + o.error + ")";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const Outcome whole = serve(bytes, std::max<size_t>(size, 1));
  const Outcome pieces = serve(bytes, 1 + size % 61);
  FUZZ_CHECK(agree(whole, pieces, deeplens::api::HttpServerOptions{}.max_header_bytes), ("the parse depends on how the bytes arrive: all at once " + describe(whole) +
                                ", in reads of " + std::to_string(1 + size % 61) + " bytes " + describe(pieces)).c_str());
  return 0;
}
