// BlobStore on the local filesystem under one root directory. Temp files live in <root>/.tmp and
// older than an hour are swept at open (left by a crash before commit). Keys are validated: no "..", no absolute
// paths, only [A-Za-z0-9._/-].
//
// Thread-safe.
#pragma once

#include <filesystem>
#include <memory>

#include "blob/blob_store.h"
#include "common/ids.h"

namespace deeplens {

class LocalBlobStore final : public BlobStore {
 public:
  static Result<std::unique_ptr<LocalBlobStore>> open(const std::filesystem::path& root, RandomSource& random);

  Result<std::unique_ptr<BlobWriter>> begin_write() override;
  Status put(const std::string& key, std::span<const uint8_t> bytes) override;
  Result<std::string> read(const std::string& key) override;
  Status remove(const std::string& key) override;
  bool exists(const std::string& key) override;
  Result<std::vector<BlobEntry>> list(const std::string& prefix) override;
  std::string file_path(const std::string& key) const override;
  BlobLocation location(const std::string& key) const override { return {"local", root_.string(), key}; }
  Status ping() override;

  // Validates key and returns its absolute path.
  Result<std::filesystem::path> path_for(const std::string& key) const;

 private:
  LocalBlobStore(std::filesystem::path root, RandomSource& random) : root_(std::move(root)), ids_(random) {}
  std::filesystem::path root_;
  IdGenerator ids_;
};

}  // namespace deeplens
