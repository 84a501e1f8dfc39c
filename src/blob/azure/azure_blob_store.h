// BlobStore over the Azure Blob Storage REST API (libcurl + OpenSSL; no Azure SDK for C++ exists
// in Debian), tested against Azurite. See azure_rest.h for how keys map to containers and blobs.
//
// - Writes spool to a local temp file (spool_dir) while the caller validates; commit() uploads it:
//   one Put Blob with Content-MD5 up to single_put_max bytes, else Put Block (Content-MD5 each) +
//   Put Block List. commit() returns only after the service answered 201, so the blob is durable
//   at the service; a writer dropped without commit uploads nothing. Uncommitted blocks of a failed
//   block upload are never visible and Azure discards them (after 7 days).
// - Containers are created on first use (409 ContainerAlreadyExists is success) and again if one
//   was deleted behind our back.
// - read() streams Get Blob; when the connection breaks mid-body it resumes with a Range request
//   pinned to the same version (If-Match: ETag). A whole-blob read is checked against the blob's
//   Content-MD5.
// - Transient failures (connection errors, timeouts, 408/429/5xx) are retried up to max_attempts
//   with exponential backoff; then kUnavailable / kTimeout naming the service. 403 is
//   kUnavailable naming the account and its credentials; a missing blob or container kNotFound.
//   The account key is never logged or put in an error.
//
// Thread-safe.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <mutex>
#include <set>

#include "blob/azure/azure_rest.h"
#include "blob/blob_store.h"
#include "common/http_client.h"
#include "common/ids.h"

namespace deeplens {

struct AzureBlobOptions {
  azure::Account account;
  std::filesystem::path spool_dir;              // temp files of writes in progress
  int64_t single_put_max = int64_t{4} << 20;    // larger blobs go up in blocks
  int64_t block_size = int64_t{4} << 20;
  std::chrono::milliseconds timeout{30000};     // one request, connect to last byte
  std::chrono::milliseconds connect_timeout{3000};
  int max_attempts = 4;                         // per operation, the first one included
  std::chrono::milliseconds backoff{100};       // before the first retry; doubles
};

class AzureBlobStore final : public BlobStore {
 public:
  // Does not contact the service (it may start after us); ping() does (one List Containers
  // request, no retries, at most 5 s: it answers readiness probes).
  static Result<std::unique_ptr<AzureBlobStore>> open(AzureBlobOptions options, RandomSource& random);

  Result<std::unique_ptr<BlobWriter>> begin_write() override;
  Status put(const std::string& key, std::span<const uint8_t> bytes) override;
  Result<std::string> read(const std::string& key) override;
  Status remove(const std::string& key) override;
  bool exists(const std::string& key) override;
  Result<std::vector<BlobEntry>> list(const std::string& prefix) override;
  std::string file_path(const std::string& key) const override;
  BlobLocation location(const std::string& key) const override;
  Status ping() override;

  // Uploads a spooled file under key (what a writer's commit does).
  Status upload_file(const std::string& key, const std::filesystem::path& file, int64_t size);

 private:
  struct Call;
  AzureBlobStore(AzureBlobOptions options, RandomSource& random) : options_(std::move(options)), ids_(random) {}

  // One signed REST request; call() retries transient failures with backoff.
  Result<ClientResponse> attempt(const Call& c);
  Result<ClientResponse> call(const Call& c);
  Error gave_up(Error e, const std::string& what, int attempts) const;
  Status ensure_container(const azure::Location& loc, bool force);
  Status put_bytes(const azure::Location& loc, std::string_view bytes, const std::string& key);
  Status put_blocks(const azure::Location& loc, const std::filesystem::path& file, int64_t size, const std::string& key);
  Error service_error(const ClientResponse& r, const std::string& what) const;

  AzureBlobOptions options_;
  IdGenerator ids_;
  HttpClient http_;
  std::string path_prefix_;  // the endpoint's own path (path-style: "/devstoreaccount1")
  std::mutex mu_;
  std::set<std::string> containers_;  // known to exist; guarded by mu_
};

}  // namespace deeplens
