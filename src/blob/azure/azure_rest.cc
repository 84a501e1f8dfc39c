#include "blob/azure/azure_rest.h"

#include <algorithm>
#include <cctype>
#include <ctime>
#include <map>

#include "common/base64.h"
#include "common/sha256.h"

namespace deeplens::azure {
namespace {

// Azurite's well-known development account (documented by Microsoft for the emulator).
constexpr std::string_view kDevAccount = "devstoreaccount1";
constexpr std::string_view kDevKey =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return std::string(s);
}

Error bad_connection_string(const std::string& why) {
  return Error(ErrorCode::kInvalidArgument, "Azure storage connection string: " + why).with("key", "blobs.azure.connection_string");
}

bool safe_path(std::string_view s) {
  if (s.empty() || s.size() > 1024 || s.front() == '/' || s.back() == '/') return false;
  size_t start = 0;
  while (true) {
    const auto slash = s.find('/', start);
    const auto part = s.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (part.empty() || part == "." || part == "..") return false;
    for (char c : part)
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')) return false;
    if (slash == std::string_view::npos) return true;
    start = slash + 1;
  }
}

bool valid_tenant(std::string_view t) {
  if (t.empty() || t.size() > 63 || t.front() == '-') return false;
  return std::all_of(t.begin(), t.end(), [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'; });
}

bool looks_hashed(std::string_view t) {
  return t.size() == 25 && t[0] == 'h' &&
         std::all_of(t.begin() + 1, t.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

}  // namespace

Result<Account> parse_connection_string(std::string_view text) {
  std::map<std::string, std::string> fields;
  size_t start = 0;
  while (start < text.size()) {
    auto end = text.find(';', start);
    if (end == std::string_view::npos) end = text.size();
    const auto part = text.substr(start, end - start);
    start = end + 1;
    if (trim(part).empty()) continue;
    const auto eq = part.find('=');
    if (eq == std::string_view::npos)
      return bad_connection_string("expected Name=value pairs separated by ';', got a part without '='");
    fields[lower(trim(part.substr(0, eq)))] = trim(part.substr(eq + 1));  // values may hold '=' (base64)
  }
  if (fields.empty()) return bad_connection_string("empty");
  Account a;
  if (auto dev = fields.find("usedevelopmentstorage"); dev != fields.end() && lower(dev->second) == "true") {
    a.name = kDevAccount;
    a.key = base64_decode(kDevKey).value();
    a.endpoint = "http://127.0.0.1:10000/" + std::string(kDevAccount);
    return a;
  }
  if (fields.count("sharedaccesssignature"))
    return bad_connection_string("SharedAccessSignature is not supported; use AccountName and AccountKey (Shared Key)");
  const auto name = fields.find("accountname");
  const auto key = fields.find("accountkey");
  if (name == fields.end() || name->second.empty()) return bad_connection_string("AccountName is missing");
  if (key == fields.end() || key->second.empty()) return bad_connection_string("AccountKey is missing");
  auto decoded = base64_decode(key->second);
  if (!decoded || decoded->empty()) return bad_connection_string("AccountKey is not base64");
  a.name = name->second;
  a.key = std::move(decoded).value();
  if (auto ep = fields.find("blobendpoint"); ep != fields.end() && !ep->second.empty()) {
    a.endpoint = ep->second;
  } else {
    const auto proto = fields.count("defaultendpointsprotocol") ? lower(fields["defaultendpointsprotocol"]) : "https";
    if (proto != "https" && proto != "http") return bad_connection_string("DefaultEndpointsProtocol must be https or http");
    const auto suffix = fields.count("endpointsuffix") ? fields["endpointsuffix"] : "core.windows.net";
    a.endpoint = proto + "://" + a.name + ".blob." + suffix;
  }
  while (!a.endpoint.empty() && a.endpoint.back() == '/') a.endpoint.pop_back();
  if (a.endpoint.rfind("http://", 0) != 0 && a.endpoint.rfind("https://", 0) != 0)
    return bad_connection_string("BlobEndpoint must be an http:// or https:// URL");
  return a;
}

std::string container_for_tenant(std::string_view tenant) {
  const bool simple = valid_tenant(tenant) && tenant.size() <= 56 && tenant.find("--") == std::string_view::npos &&
                      tenant.back() != '-' && !looks_hashed(tenant);
  if (simple) return std::string(tenant) + "-images";
  return "h" + sha256_hex(tenant).substr(0, 24) + "-images";
}

Result<Location> locate(std::string_view key) {
  auto bad = [&] { return Error(ErrorCode::kInvalidArgument, "invalid blob key").with("key", std::string(key)); };
  if (!key.starts_with("tenant-") || !safe_path(key)) return bad();
  const auto first = key.find('/');
  const auto second = first == std::string_view::npos ? first : key.find('/', first + 1);
  if (second == std::string_view::npos) return bad();
  Location loc;
  loc.tenant = std::string(key.substr(7, first - 7));
  if (!valid_tenant(loc.tenant)) return bad();
  const auto kind = key.substr(first + 1, second - first - 1);
  if (kind.empty() || std::isdigit(static_cast<unsigned char>(kind.front()))) return bad();
  loc.container = container_for_tenant(loc.tenant);
  loc.blob = kind == "images" ? std::string(key.substr(second + 1)) : std::string(key.substr(first + 1));
  return loc;
}

std::string key_for(std::string_view tenant, std::string_view blob) {
  std::string key = "tenant-" + std::string(tenant) + "/";
  if (!blob.empty() && std::isdigit(static_cast<unsigned char>(blob.front()))) key += "images/";
  key += blob;
  return key;
}

std::string percent_encode(std::string_view text, bool keep_slash) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || (keep_slash && c == '/')) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    }
  }
  return out;
}

std::string string_to_sign(const SignedRequest& request, std::string_view account) {
  std::map<std::string, std::string> standard;
  std::map<std::string, std::string> ms;  // sorted by lowercase name
  for (const auto& [name, value] : request.headers) {
    const auto n = lower(name);
    if (n.rfind("x-ms-", 0) == 0)
      ms[n] = trim(value);
    else
      standard[n] = value;
  }
  auto h = [&](const char* name) {
    auto it = standard.find(name);
    return it == standard.end() ? std::string() : it->second;
  };
  std::string s = request.method + "\n";
  s += h("content-encoding") + "\n";
  s += h("content-language") + "\n";
  s += (request.content_length ? std::to_string(request.content_length) : std::string()) + "\n";
  s += h("content-md5") + "\n";
  s += h("content-type") + "\n";
  s += h("date") + "\n";
  s += h("if-modified-since") + "\n";
  s += h("if-match") + "\n";
  s += h("if-none-match") + "\n";
  s += h("if-unmodified-since") + "\n";
  s += h("range") + "\n";
  for (const auto& [name, value] : ms) s += name + ":" + value + "\n";
  s += "/" + std::string(account) + request.path;
  std::map<std::string, std::vector<std::string>> query;
  for (const auto& [name, value] : request.query) query[lower(name)].push_back(value);
  for (auto& [name, values] : query) {
    std::sort(values.begin(), values.end());
    s += "\n" + name + ":";
    for (size_t i = 0; i < values.size(); ++i) s += (i ? "," : "") + values[i];
  }
  return s;
}

std::string authorization(const SignedRequest& request, const Account& account) {
  return "SharedKey " + account.name + ":" + base64_encode(hmac_sha256(account.key, string_to_sign(request, account.name)));
}

std::string http_date(int64_t unix_seconds) {
  const time_t t = static_cast<time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  char buf[40];
  std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT", kDays[tm.tm_wday], tm.tm_mday, kMonths[tm.tm_mon],
                tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
  return buf;
}

std::string content_md5(std::string_view bytes) {
  Md5 md5;
  md5.update(bytes);
  return base64_encode(md5.digest());
}

}  // namespace deeplens::azure
