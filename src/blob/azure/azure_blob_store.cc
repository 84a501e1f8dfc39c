#include "blob/azure/azure_blob_store.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <thread>

#include "common/base64.h"
#include "common/log.h"
#include "common/sha256.h"

namespace deeplens {
namespace fs = std::filesystem;
using azure::Location;

namespace {

Error io_error(const std::string& what, const fs::path& path, int err) {
  return Error(ErrorCode::kIoError, what + ": " + std::strerror(err)).with("path", path.string());
}

int64_t now_unix() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

bool transient_status(long status) {
  return status == 408 || status == 429 || status == 500 || status == 502 || status == 503 || status == 504;
}

bool transient_error(const Error& e) { return e.code == ErrorCode::kUnavailable || e.code == ErrorCode::kTimeout; }

// A parsed XML answer (List Containers / List Blobs / an error body); libxml2, network access off.
class Xml {
 public:
  explicit Xml(std::string_view text)
      : doc_(xmlReadMemory(text.data(), static_cast<int>(text.size()), nullptr, nullptr,
                           XML_PARSE_NONET | XML_PARSE_NOBLANKS | XML_PARSE_NOERROR | XML_PARSE_NOWARNING)) {}
  ~Xml() {
    if (doc_) xmlFreeDoc(doc_);
  }
  Xml(const Xml&) = delete;
  Xml& operator=(const Xml&) = delete;
  xmlNode* root() const { return doc_ ? xmlDocGetRootElement(doc_) : nullptr; }

  static xmlNode* child(xmlNode* n, const char* name) {
    for (xmlNode* c = n ? n->children : nullptr; c; c = c->next)
      if (c->type == XML_ELEMENT_NODE && xmlStrcmp(c->name, reinterpret_cast<const xmlChar*>(name)) == 0) return c;
    return nullptr;
  }
  static std::vector<xmlNode*> children(xmlNode* n, const char* name) {
    std::vector<xmlNode*> out;
    for (xmlNode* c = n ? n->children : nullptr; c; c = c->next)
      if (c->type == XML_ELEMENT_NODE && xmlStrcmp(c->name, reinterpret_cast<const xmlChar*>(name)) == 0) out.push_back(c);
    return out;
  }
  static std::string text(xmlNode* n) {
    if (!n) return {};
    xmlChar* t = xmlNodeGetContent(n);
    std::string out = t ? reinterpret_cast<const char*>(t) : "";
    xmlFree(t);
    return out;
  }

 private:
  xmlDoc* doc_;
};

class AzureBlobWriter final : public BlobWriter {
 public:
  AzureBlobWriter(AzureBlobStore& store, fs::path temp, int fd) : store_(store), temp_(std::move(temp)), fd_(fd) {}
  ~AzureBlobWriter() override {
    if (fd_ >= 0) ::close(fd_);
    std::error_code ec;
    fs::remove(temp_, ec);  // committed or not: the service holds the blob now
  }
  Status write(std::span<const uint8_t> bytes) override {
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::write(fd_, bytes.data() + done, bytes.size() - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        return io_error("write spool", temp_, errno);
      }
      done += static_cast<size_t>(n);
    }
    size_ += static_cast<int64_t>(bytes.size());
    return {};
  }
  int64_t size() const override { return size_; }
  const fs::path& temp_path() const override { return temp_; }
  Status commit(const std::string& key) override { return store_.upload_file(key, temp_, size_); }

 private:
  AzureBlobStore& store_;
  fs::path temp_;
  int fd_;
  int64_t size_ = 0;
};

Result<std::string> read_range(const fs::path& file, int64_t offset, int64_t length) {
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return io_error("open spool", file, errno);
  std::string out(static_cast<size_t>(length), '\0');
  int64_t done = 0;
  while (done < length) {
    const ssize_t n = ::pread(fd, out.data() + done, static_cast<size_t>(length - done), offset + done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : EIO;
      ::close(fd);
      return io_error("read spool", file, err);
    }
    done += n;
  }
  ::close(fd);
  return out;
}

}  // namespace

struct AzureBlobStore::Call {
  std::string method;
  std::string path;  // below the endpoint, encoded: "/", "/container", "/container/blob"
  std::vector<std::pair<std::string, std::string>> query;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string_view body;
  std::function<bool(const ClientResponse&, std::string_view)> sink;
  std::string what;  // "Put Blob acme-images/2026/..." for messages
  std::chrono::milliseconds timeout{0};  // 0: options.timeout
};

Result<std::unique_ptr<AzureBlobStore>> AzureBlobStore::open(AzureBlobOptions options, RandomSource& random) {
  if (options.account.name.empty() || options.account.key.empty() || options.account.endpoint.empty())
    return Error(ErrorCode::kInvalidArgument, "Azure Blob Storage: account name, key and endpoint are required");
  if (options.block_size < 1024 || options.block_size > (int64_t{4000} << 20))
    return Error(ErrorCode::kInvalidArgument, "Azure Blob Storage: block size must be between 1 KiB and 4000 MiB");
  std::error_code ec;
  fs::create_directories(options.spool_dir, ec);
  if (ec) return io_error("create blob spool", options.spool_dir, ec.value());
  xmlInitParser();
  std::unique_ptr<AzureBlobStore> store(new AzureBlobStore(std::move(options), random));
  // The endpoint's own path is part of every request path (path-style URLs, as Azurite serves).
  const auto& ep = store->options_.account.endpoint;
  const auto scheme_end = ep.find("://");
  const auto path_start = ep.find('/', scheme_end + 3);
  if (path_start != std::string::npos) store->path_prefix_ = ep.substr(path_start);
  return store;
}

Error AzureBlobStore::service_error(const ClientResponse& r, const std::string& what) const {
  std::string code = r.header("x-ms-error-code") ? *r.header("x-ms-error-code") : "";
  std::string message;
  if (!r.body.empty()) {
    Xml xml(r.body);
    if (xml.root()) {
      if (code.empty()) code = Xml::text(Xml::child(xml.root(), "Code"));
      message = Xml::text(Xml::child(xml.root(), "Message"));
      if (const auto nl = message.find('\n'); nl != std::string::npos) message.resize(nl);  // "RequestId:..." follows
    }
  }
  const std::string status = "HTTP " + std::to_string(r.status) + (code.empty() ? "" : " " + code);
  ErrorCode ec = ErrorCode::kInternal;
  std::string why;
  if (r.status == 403) {
    ec = ErrorCode::kUnavailable;
    why = "the service refused the credentials of account '" + options_.account.name +
          "' (" + status + "): check AccountKey in blobs.azure.connection_string";
  } else if (r.status == 404) {
    ec = ErrorCode::kNotFound;
    why = code == "ContainerNotFound" ? "container does not exist (" + status + ")" : "blob not found (" + status + ")";
  } else if (transient_status(r.status)) {
    ec = ErrorCode::kUnavailable;
    why = "the service is unavailable (" + status + ")";
  } else {
    why = "the service answered " + status;
  }
  if (!message.empty()) why += ": " + message;
  return Error(ec, "Azure Blob Storage " + what + ": " + why)
      .with("account", options_.account.name)
      .with("http_status", std::to_string(r.status))
      .with("azure_error", code)
      .with("service", "blobs");
}

Result<ClientResponse> AzureBlobStore::attempt(const Call& c) {
  azure::SignedRequest sr;
  sr.method = c.method;
  sr.path = path_prefix_ + c.path;
  sr.query = c.query;
  sr.headers = c.headers;
  sr.headers.emplace_back("x-ms-date", azure::http_date(now_unix()));
  sr.headers.emplace_back("x-ms-version", std::string(azure::kApiVersion));
  sr.content_length = c.body.size();

  ClientRequest req;
  req.method = c.method;
  req.url = options_.account.endpoint + c.path;
  for (size_t i = 0; i < c.query.size(); ++i)
    req.url += (i ? "&" : "?") + azure::percent_encode(c.query[i].first, false) + "=" +
               azure::percent_encode(c.query[i].second, false);
  req.headers = sr.headers;
  req.headers.emplace_back("Authorization", azure::authorization(sr, options_.account));
  req.body = c.body;
  req.timeout = c.timeout.count() > 0 ? c.timeout : options_.timeout;
  req.connect_timeout = std::min(req.timeout, options_.connect_timeout);
  req.sink = c.sink;
  return http_.perform(req);
}

Error AzureBlobStore::gave_up(Error e, const std::string& what, int attempts) const {
  e.message = "Azure Blob Storage " + what + ": " + e.message + " (after " + std::to_string(attempts) +
              " attempts; is the blob service at " + options_.account.endpoint + " up?)";
  return e.with("account", options_.account.name).with("service", "blobs");
}

Result<ClientResponse> AzureBlobStore::call(const Call& c) {
  auto backoff = options_.backoff;
  for (int n = 1;; ++n) {
    auto r = attempt(c);
    const bool retry = r ? transient_status(r->status) : transient_error(r.error());
    if (!retry || n >= options_.max_attempts) {
      if (!r) return gave_up(std::move(r).error(), c.what, n);
      return r;
    }
    log_warn("blobs.azure.retry",
             {{"what", c.what}, {"attempt", n}, {"error", r ? "HTTP " + std::to_string(r->status) : r.error().message}});
    std::this_thread::sleep_for(backoff);
    backoff *= 2;
  }
}

Status AzureBlobStore::ensure_container(const Location& loc, bool force) {
  {
    std::lock_guard lock(mu_);
    if (!force && containers_.count(loc.container)) return {};
  }
  Call c;
  c.method = "PUT";
  c.path = "/" + loc.container;
  c.query = {{"restype", "container"}};
  c.headers = {{"x-ms-meta-" + std::string(azure::kTenantMetadata), loc.tenant}};
  c.what = "Create Container " + loc.container;
  auto r = call(c);
  if (!r) return std::move(r).error();
  const std::string* code = r->header("x-ms-error-code");
  if (r->status != 201 && !(r->status == 409 && code && *code == "ContainerAlreadyExists"))
    return service_error(*r, c.what);
  std::lock_guard lock(mu_);
  containers_.insert(loc.container);
  return {};
}

Status AzureBlobStore::put_bytes(const Location& loc, std::string_view bytes, const std::string& key) {
  if (auto st = ensure_container(loc, false); !st) return st;
  for (int round = 0;; ++round) {
    Call c;
    c.method = "PUT";
    c.path = "/" + loc.container + "/" + loc.blob;
    c.headers = {{"Content-Type", "application/octet-stream"},
                 {"Content-MD5", azure::content_md5(bytes)},
                 {"x-ms-blob-type", "BlockBlob"}};
    c.body = bytes;
    c.what = "Put Blob " + loc.container + "/" + loc.blob;
    auto r = call(c);
    if (!r) return std::move(r).error().with("key", key);
    if (r->status == 201) return {};
    const std::string* code = r->header("x-ms-error-code");
    if (r->status == 404 && code && *code == "ContainerNotFound" && round == 0) {
      if (auto st = ensure_container(loc, true); !st) return st;  // deleted behind our back
      continue;
    }
    return service_error(*r, c.what).with("key", key);
  }
}

Status AzureBlobStore::put_blocks(const Location& loc, const fs::path& file, int64_t size, const std::string& key) {
  if (auto st = ensure_container(loc, false); !st) return st;
  const std::string target = loc.container + "/" + loc.blob;
  std::vector<std::string> ids;
  Md5 whole;
  for (int64_t offset = 0; offset < size; offset += options_.block_size) {
    auto block = read_range(file, offset, std::min(options_.block_size, size - offset));
    if (!block) return std::move(block).error();
    whole.update(*block);
    char digits[16];
    std::snprintf(digits, sizeof digits, "%09zu", ids.size());  // 9 digits -> 12 base64 characters, URL-safe
    ids.push_back(base64_encode(digits));
    for (int round = 0;; ++round) {
      Call c;
      c.method = "PUT";
      c.path = "/" + loc.container + "/" + loc.blob;
      c.query = {{"comp", "block"}, {"blockid", ids.back()}};
      c.headers = {{"Content-Type", "application/octet-stream"}, {"Content-MD5", azure::content_md5(*block)}};
      c.body = *block;
      c.what = "Put Block " + target;
      auto r = call(c);
      if (!r) return std::move(r).error().with("key", key);
      if (r->status == 201) break;
      const std::string* code = r->header("x-ms-error-code");
      if (r->status == 404 && code && *code == "ContainerNotFound" && round == 0) {
        if (auto st = ensure_container(loc, true); !st) return st;
        continue;
      }
      return service_error(*r, c.what).with("key", key);
    }
  }
  std::string xml = "<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>";
  for (const auto& id : ids) xml += "<Latest>" + id + "</Latest>";
  xml += "</BlockList>";
  Call c;
  c.method = "PUT";
  c.path = "/" + loc.container + "/" + loc.blob;
  c.query = {{"comp", "blocklist"}};
  c.headers = {{"Content-Type", "application/xml"},
               {"Content-MD5", azure::content_md5(xml)},
               {"x-ms-blob-content-md5", base64_encode(whole.digest())},
               {"x-ms-blob-content-type", "application/octet-stream"}};
  c.body = xml;
  c.what = "Put Block List " + target;
  auto r = call(c);
  if (!r) return std::move(r).error().with("key", key);
  if (r->status != 201) return service_error(*r, c.what).with("key", key);
  return {};
}

Status AzureBlobStore::upload_file(const std::string& key, const fs::path& file, int64_t size) {
  auto loc = azure::locate(key);
  if (!loc) return std::move(loc).error();
  if (size > options_.single_put_max) return put_blocks(*loc, file, size, key);
  auto bytes = read_range(file, 0, size);
  if (!bytes) return std::move(bytes).error();
  return put_bytes(*loc, *bytes, key);
}

Result<std::unique_ptr<BlobWriter>> AzureBlobStore::begin_write() {
  const fs::path temp = options_.spool_dir / ("azure-" + ids_.uuid_v4() + ".part");
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return io_error("create spool file", temp, errno);
  return std::unique_ptr<BlobWriter>(new AzureBlobWriter(*this, temp, fd));
}

Status AzureBlobStore::put(const std::string& key, std::span<const uint8_t> bytes) {
  auto loc = azure::locate(key);
  if (!loc) return std::move(loc).error();
  return put_bytes(*loc, std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), key);
}

Result<std::string> AzureBlobStore::read(const std::string& key) {
  auto loc = azure::locate(key);
  if (!loc) return std::move(loc).error();
  std::string out;
  std::string etag;
  std::string error_body;
  Call c;
  c.method = "GET";
  c.path = "/" + loc->container + "/" + loc->blob;
  c.what = "Get Blob " + loc->container + "/" + loc->blob;
  bool first_piece = true;
  c.sink = [&](const ClientResponse& head, std::string_view piece) {
    if (head.status == 200 || head.status == 206) {
      if (first_piece && head.status == 200) {  // the start of the blob: this version is the one to resume
        const auto* e = head.header("etag");
        etag = e ? *e : "";
      }
      out.append(piece);
    } else if (error_body.size() < 65536) {
      error_body.append(piece);
    }
    first_piece = false;
    return true;
  };
  auto backoff = options_.backoff;
  // Retried here rather than in call(): a retry resumes from what already arrived.
  for (int n = 1;; ++n) {
    const bool resuming = !out.empty() && !etag.empty();
    if (!resuming) out.clear();
    c.headers.clear();
    if (resuming) c.headers = {{"If-Match", etag}, {"x-ms-range", "bytes=" + std::to_string(out.size()) + "-"}};
    error_body.clear();
    first_piece = true;
    auto r = attempt(c);
    if (r) r->body = error_body;
    if (r && (r->status == 200 || r->status == 206)) {
      if (!resuming)
        if (const auto* md5 = r->header("content-md5"); md5 && azure::content_md5(out) != *md5)
          return Error(ErrorCode::kIoError, "Azure Blob Storage " + c.what + ": the content does not match its Content-MD5")
              .with("key", key);
      return out;
    }
    bool retry = r ? transient_status(r->status) : transient_error(r.error());
    if (r && r->status == 412) {  // the blob was replaced between two parts: start over
      out.clear();
      etag.clear();
      retry = true;
    }
    if (!retry || n >= options_.max_attempts) {
      if (!r) return gave_up(std::move(r).error(), c.what, n).with("key", key);
      return service_error(*r, c.what).with("key", key);
    }
    std::this_thread::sleep_for(backoff);
    backoff *= 2;
  }
}

Status AzureBlobStore::remove(const std::string& key) {
  auto loc = azure::locate(key);
  if (!loc) return std::move(loc).error();
  Call c;
  c.method = "DELETE";
  c.path = "/" + loc->container + "/" + loc->blob;
  c.what = "Delete Blob " + loc->container + "/" + loc->blob;
  auto r = call(c);
  if (!r) return std::move(r).error().with("key", key);
  if (r->status == 202 || r->status == 404) return {};  // absent is fine (idempotent)
  return service_error(*r, c.what).with("key", key);
}

bool AzureBlobStore::exists(const std::string& key) {
  auto loc = azure::locate(key);
  if (!loc) return false;
  Call c;
  c.method = "HEAD";
  c.path = "/" + loc->container + "/" + loc->blob;
  c.what = "Get Blob Properties " + loc->container + "/" + loc->blob;
  auto r = call(c);
  return r && r->status == 200;
}

Result<std::vector<BlobEntry>> AzureBlobStore::list(const std::string& prefix) {
  // The tenants' containers: those carrying our metadata (other containers in the account are not ours).
  std::vector<std::pair<std::string, std::string>> containers;  // name, tenant
  std::string marker;
  do {
    Call c;
    c.method = "GET";
    c.path = "/";
    c.query = {{"comp", "list"}, {"include", "metadata"}};
    if (!marker.empty()) c.query.emplace_back("marker", marker);
    c.what = "List Containers";
    auto r = call(c);
    if (!r) return std::move(r).error();
    if (r->status != 200) return service_error(*r, c.what);
    Xml xml(r->body);
    if (!xml.root()) return Error(ErrorCode::kInternal, "Azure Blob Storage List Containers: the answer is not XML");
    for (xmlNode* n : Xml::children(Xml::child(xml.root(), "Containers"), "Container")) {
      const std::string tenant = Xml::text(Xml::child(Xml::child(n, "Metadata"), azure::kTenantMetadata.data()));
      const std::string name = Xml::text(Xml::child(n, "Name"));
      if (!tenant.empty() && azure::container_for_tenant(tenant) == name) containers.emplace_back(name, tenant);
    }
    marker = Xml::text(Xml::child(xml.root(), "NextMarker"));
  } while (!marker.empty());

  std::vector<BlobEntry> out;
  for (const auto& [container, tenant] : containers) {
    const std::string tenant_prefix = "tenant-" + tenant + "/";
    if (!(tenant_prefix.starts_with(prefix) || prefix.starts_with(tenant_prefix))) continue;
    marker.clear();
    do {
      Call c;
      c.method = "GET";
      c.path = "/" + container;
      c.query = {{"restype", "container"}, {"comp", "list"}};
      if (!marker.empty()) c.query.emplace_back("marker", marker);
      c.what = "List Blobs " + container;
      auto r = call(c);
      if (!r) return std::move(r).error();
      if (r->status == 404) break;  // deleted meanwhile
      if (r->status != 200) return service_error(*r, c.what);
      Xml xml(r->body);
      if (!xml.root()) return Error(ErrorCode::kInternal, "Azure Blob Storage List Blobs: the answer is not XML");
      for (xmlNode* n : Xml::children(Xml::child(xml.root(), "Blobs"), "Blob")) {
        std::string key = azure::key_for(tenant, Xml::text(Xml::child(n, "Name")));
        if (!key.starts_with(prefix)) continue;
        const std::string modified = Xml::text(Xml::child(Xml::child(n, "Properties"), "Last-Modified"));
        const time_t at = curl_getdate(modified.c_str(), nullptr);
        out.push_back(BlobEntry{std::move(key), Timestamp(std::chrono::seconds(at < 0 ? 0 : at))});
      }
      marker = Xml::text(Xml::child(xml.root(), "NextMarker"));
    } while (!marker.empty());
  }
  return out;
}

std::string AzureBlobStore::file_path(const std::string& key) const {
  auto loc = azure::locate(key);
  if (!loc) return {};
  return options_.account.endpoint + "/" + loc->container + "/" + loc->blob;
}

BlobLocation AzureBlobStore::location(const std::string& key) const {
  auto loc = azure::locate(key);
  if (!loc) return {"azure_blob", "", key};
  return {"azure_blob", loc->container, loc->blob};
}

Status AzureBlobStore::ping() {
  Call c;
  c.method = "GET";
  c.path = "/";
  c.query = {{"comp", "list"}, {"maxresults", "1"}};
  c.what = "List Containers";
  c.timeout = std::min(options_.timeout, std::chrono::milliseconds(5000));  // a probe answers quickly or not at all
  auto r = attempt(c);  // once: readiness reports the present, retries would only delay it
  if (!r) return gave_up(std::move(r).error(), c.what, 1);
  if (r->status != 200) return service_error(*r, c.what);
  return {};
}

}  // namespace deeplens
