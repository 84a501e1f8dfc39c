#include "pipeline/sweeper.h"

#include <set>

#include "blob/blob_store.h"
#include "common/ids.h"
#include "common/log.h"

namespace deeplens {

namespace fs = std::filesystem;

BlobOwner blob_owner(const std::string& key) {
  // tenant-<t>/<kind>/YYYY/MM/DD/<imageId>.<ext>
  if (key.rfind("tenant-", 0) != 0) return {};
  const auto slash = key.find('/');
  if (slash == std::string::npos) return {};
  const auto name_at = key.rfind('/') + 1;
  const auto dot = key.find('.', name_at);
  std::string id = key.substr(name_at, dot == std::string::npos ? std::string::npos : dot - name_at);
  if (!is_image_id(id)) return {};
  return BlobOwner{key.substr(7, slash - 7), std::move(id)};
}

Sweeper::Sweeper(PipelineContext& ctx, SweeperOptions options) : ctx_(ctx), options_(std::move(options)) {
  ctx_.metrics.describe("deeplens_sweeper_removed_total", "counter", "Orphans the sweeper removed, by kind");
}

Sweeper::~Sweeper() { stop(); }

void Sweeper::start() {
  if (thread_.joinable()) return;
  {
    std::lock_guard lock(mu_);
    stopping_ = false;
  }
  thread_ = std::thread([this] { run(); });
}

void Sweeper::stop() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void Sweeper::run() {
  while (true) {
    auto report = sweep();
    if (!report) log_warn("sweeper.failed", {{"error", report.error().to_string()}});
    std::unique_lock lock(mu_);
    if (cv_.wait_for(lock, options_.interval, [&] { return stopping_; })) return;
  }
}

Result<SweepReport> Sweeper::sweep() {
  SweepReport report;
  sweep_spool(report);
  if (auto st = sweep_blobs(report); !st) return std::move(st).error();
  if (options_.sweep_vectors)
    if (auto st = sweep_vectors(report); !st) return std::move(st).error();
  ctx_.metrics.add("deeplens_sweeper_removed_total", {{"kind", "blob"}}, static_cast<double>(report.blobs_removed));
  ctx_.metrics.add("deeplens_sweeper_removed_total", {{"kind", "vector"}}, static_cast<double>(report.vectors_removed));
  ctx_.metrics.add("deeplens_sweeper_removed_total", {{"kind", "spool"}}, static_cast<double>(report.spool_files_removed));
  if (report.blobs_removed || report.vectors_removed || report.spool_files_removed)
    log_info("sweeper.removed", {{"blobs", static_cast<long long>(report.blobs_removed)},
                                 {"vectors", static_cast<long long>(report.vectors_removed)},
                                 {"spoolFiles", static_cast<long long>(report.spool_files_removed)}});
  return report;
}

void Sweeper::sweep_spool(SweepReport& report) {
  if (options_.spool_dir.empty()) return;
  const auto cutoff = fs::file_time_type::clock::now() - options_.grace;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(options_.spool_dir, ec)) {
    std::error_code entry_ec;
    if (!entry.is_regular_file(entry_ec) || entry.last_write_time(entry_ec) >= cutoff || entry_ec) continue;
    if (fs::remove(entry.path(), entry_ec)) ++report.spool_files_removed;
  }
}

Status Sweeper::sweep_blobs(SweepReport& report) {
  auto blobs = ctx_.blobs.list("tenant-");
  if (!blobs) return std::move(blobs).error();
  const Timestamp cutoff = ctx_.clock.now() - options_.grace;
  std::vector<std::pair<BlobEntry, BlobOwner>> old;
  for (auto& b : *blobs) {
    if (b.modified >= cutoff) continue;  // maybe an upload in flight
    auto owner = blob_owner(b.key);
    if (!owner.image_id.empty()) old.emplace_back(std::move(b), std::move(owner));
  }
  std::vector<std::string> ids;
  ids.reserve(old.size());
  for (const auto& [blob, owner] : old) ids.push_back(owner.image_id);
  auto existing = ctx_.store.existing_images(ids);
  if (!existing) return std::move(existing).error();
  const std::set<std::string> alive(existing->begin(), existing->end());
  for (const auto& [blob, owner] : old) {
    if (alive.count(owner.image_id)) continue;
    // Re-check one at a time: the row may have been inserted since the batch looked.
    if (auto image = ctx_.store.get_image(owner.tenant_id, owner.image_id); image || image.error().code != ErrorCode::kNotFound)
      continue;
    if (auto st = ctx_.blobs.remove(blob.key); !st) return st;
    ++report.blobs_removed;
    log_info("sweeper.orphan_blob", {{"key", blob.key}});
  }
  return {};
}

Status Sweeper::sweep_vectors(SweepReport& report) {
  for (const auto& stats : ctx_.vectors.stats()) {
    VectorIndex* index = ctx_.vectors.find_collection(stats.name);
    if (!index) continue;
    auto ids = index->ids();
    auto existing = ctx_.store.existing_images(ids);
    if (!existing) return std::move(existing).error();
    const std::set<std::string> alive(existing->begin(), existing->end());
    for (const auto& id : ids) {
      if (alive.count(id)) continue;
      if (auto st = index->remove(id); !st) return st;
      ++report.vectors_removed;
    }
  }
  return {};
}

}  // namespace deeplens
