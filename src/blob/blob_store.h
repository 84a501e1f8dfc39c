// BlobStore: where image bytes and thumbnails live, addressed by a key such as
// "tenant-acme-corp/images/2025/11/28/img_<uuid>.jpg" (blob_key() builds it; never from a client's
// file name).
//
// Writes stream into a BlobWriter (a temp object) while the caller hashes/validates; commit(key)
// makes the blob durable and visible atomically (local: fsync + rename + fsync dir). A writer
// dropped without commit leaves nothing behind.
//
// Implementations: local/ (filesystem), azure/ (Azure Blob Storage).
// Thread-safety: BlobStore is thread-safe; a BlobWriter is used by one thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/result.h"

namespace deeplens {

class BlobWriter {
 public:
  virtual ~BlobWriter() = default;  // aborts when not committed
  virtual Status write(std::span<const uint8_t> bytes) = 0;
  virtual int64_t size() const = 0;
  // A local file holding what was written so far (for probing before commit).
  virtual const std::filesystem::path& temp_path() const = 0;
  // Durable and visible under key once this returns OK.
  virtual Status commit(const std::string& key) = 0;
};

// Where a blob lives, as the spec's events name it (storageProvider).
struct BlobLocation {
  std::string type;       // "local", "azure_blob"
  std::string container;  // root directory or container
  std::string name;       // path below it, or blob name
};

struct BlobEntry {
  std::string key;
  Timestamp modified;  // when the blob was last written
};

class BlobStore {
 public:
  virtual ~BlobStore() = default;
  virtual Result<std::unique_ptr<BlobWriter>> begin_write() = 0;
  // Writes a small blob in one call (thumbnails).
  virtual Status put(const std::string& key, std::span<const uint8_t> bytes) = 0;
  virtual Result<std::string> read(const std::string& key) = 0;  // kNotFound when absent
  virtual Status remove(const std::string& key) = 0;             // absent is OK (idempotent)
  virtual bool exists(const std::string& key) = 0;
  // Every committed blob whose key starts with prefix (not writes in progress), in no order.
  virtual Result<std::vector<BlobEntry>> list(const std::string& prefix) = 0;
  // What the spec's events call filePath (a path or URL) and storageProvider for this key.
  virtual std::string file_path(const std::string& key) const = 0;
  virtual BlobLocation location(const std::string& key) const = 0;
  virtual Status ping() = 0;
};

// "tenant-<tenant>/images/YYYY/MM/DD/<imageId>.<ext>" (kind "images") or ".../thumbnails/...".
std::string blob_key(std::string_view kind, std::string_view tenant_id, std::string_view image_id,
                     std::string_view extension, Timestamp uploaded_at);

}  // namespace deeplens
