// Helpers for pipeline integration tests: a data directory in /tmp, uploads of synthetic "images"
// through the real ingest path, and waiting with a deadline (never sleeps as synchronisation).
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <thread>

#include "app/node.h"
#include "events/codec.h"
#include "events/topics.h"
#include "pipeline/ingest.h"
#include "pipeline/status.h"

namespace deeplens::testing {

inline std::filesystem::path make_temp_dir(const std::string& prefix) {
  std::string templ = (std::filesystem::temp_directory_path() / (prefix + "-XXXXXX")).string();
  char* made = ::mkdtemp(templ.data());
  if (!made) throw std::runtime_error("mkdtemp failed");
  return made;
}

// Polls cond until true or the deadline; returns whether it became true.
inline bool wait_until(const std::function<bool()>& cond, std::chrono::milliseconds deadline) {
  const auto end = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < end) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return cond();
}

// Uploads `bytes` as an image of tenant through accept_upload (the API's path).
inline Result<CreateImageOutcome> upload_bytes(PipelineContext& ctx, const std::string& tenant,
                                               const std::string& bytes, std::vector<std::string> models,
                                               bool skip_duplicate_check = true,
                                               Priority priority = Priority::kNormal) {
  auto writer = ctx.blobs.begin_write();
  if (!writer) return std::move(writer).error();
  if (auto st = (*writer)->write(std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size())); !st)
    return std::move(st).error();
  UploadRequest req;
  req.tenant_id = tenant;
  req.file_name = "synthetic.jpg";
  req.options.models = std::move(models);
  req.options.generate_thumbnail = false;
  req.options.skip_duplicate_check = skip_duplicate_check;
  req.options.priority = priority;
  req.sha256 = std::to_string(std::hash<std::string>{}(bytes));
  req.info.format = "JPEG";
  req.info.content_type = "image/jpeg";
  req.info.extension = "jpg";
  req.info.width = 1;
  req.info.height = 1;
  req.info.color_profile = "srgb";
  req.blob = std::move(writer).value();
  return accept_upload(ctx, std::move(req));
}

inline int64_t count_status(MetadataStore& store, const std::string& status) {
  auto counts = store.count_by_status();
  if (!counts) return -1;
  for (const auto& [s, n] : *counts)
    if (s == status) return n;
  return 0;
}

// Reads every ProcessingCompletedEvent ever published, as a consumer group of its own.
class CompletionAudit {
 public:
  explicit CompletionAudit(EventBus& bus) {
    ConsumerOptions o;
    o.group = "test.audit";
    o.topics = {std::string(topics::kProcessingCompleted)};
    o.max_batch = 256;
    consumer_ = std::move(bus.subscribe(o)).value();
  }
  // Drains what is available; returns completed events per imageId.
  const std::map<std::string, int>& drain() {
    while (true) {
      auto batch = consumer_->poll(std::chrono::milliseconds(50));
      if (!batch || batch->empty()) break;
      for (const auto& m : *batch) {
        auto e = decode_processing_completed(m.payload);
        if (e && event_ids_.insert(e->envelope.event_id).second) ++per_image_[e->data.image_id];
        (void)consumer_->commit(m);
      }
    }
    return per_image_;
  }

 private:
  std::unique_ptr<Consumer> consumer_;
  std::set<std::string> event_ids_;
  std::map<std::string, int> per_image_;
};

}  // namespace deeplens::testing
