// Sweeper: finds what a crash (or a race it could not prevent) left behind and removes it:
//   - image and thumbnail blobs without an image row (a crash between the blob's commit and the
//     row's insert, or between a delete's row and its blobs),
//   - vectors without an image row (a crash between a delete's row and its vectors),
//   - spool files of request bodies (a crash mid-upload).
// Blobs and spool files younger than `grace` are never touched, so an upload in flight (its blob
// is committed a moment before its row) is safe; a vector has no age, but the index stage only
// writes one for an image whose row exists, so a vector without a row is always an orphan.
//
// Runs once at start() and then every `interval` on its own thread; stop() joins it (a sweep in
// progress finishes its current item). sweep() runs one pass on the caller's thread (tests, ops).
// Thread-safety: start()/stop() from one owning thread; sweep() may run beside the pipeline.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <thread>

#include "pipeline/context.h"

namespace deeplens {

struct SweeperOptions {
  std::chrono::seconds grace{3600};      // sweep.grace_s: younger blobs and spool files are kept
  std::chrono::seconds interval{3600};   // sweep.interval_s: between passes
  std::filesystem::path spool_dir;       // request bodies (empty = none)
  bool sweep_vectors = true;             // only in the process that owns the vector store
};

struct SweepReport {
  int64_t blobs_removed = 0;
  int64_t vectors_removed = 0;
  int64_t spool_files_removed = 0;
};

class Sweeper {
 public:
  Sweeper(PipelineContext& ctx, SweeperOptions options);
  ~Sweeper();
  Sweeper(const Sweeper&) = delete;
  Sweeper& operator=(const Sweeper&) = delete;

  void start();
  void stop();
  Result<SweepReport> sweep();

 private:
  void run();
  Status sweep_blobs(SweepReport& report);
  Status sweep_vectors(SweepReport& report);
  void sweep_spool(SweepReport& report);

  PipelineContext& ctx_;
  const SweeperOptions options_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;  // guarded by mu_
  std::thread thread_;
};

// The image id a blob key names ("tenant-t/images/2025/11/28/img_x.jpg" -> "img_x"), and its
// tenant ("t"); empty when the key is not an image or thumbnail blob.
struct BlobOwner {
  std::string tenant_id;
  std::string image_id;
};
BlobOwner blob_owner(const std::string& key);

}  // namespace deeplens
