#include "pipeline/ingest.h"

#include <nlohmann/json.hpp>
#include <set>

#include "common/log.h"
#include "events/codec.h"
#include "pipeline/event_factory.h"

namespace deeplens {

std::string sanitize_file_name(std::string_view name) {
  std::string out;
  for (unsigned char c : name) {
    if (out.size() >= 255) break;
    if (c < 0x20 || c == 0x7f || c == '/' || c == '\\' || c == ':' || c == '"' || c == '<' || c == '>' || c == '|' ||
        c == '?' || c == '*')
      out += '_';
    else
      out += static_cast<char>(c);
  }
  if (out.empty() || out == "." || out == "..") out = "upload";
  return out;
}

Result<CreateImageOutcome> accept_upload(PipelineContext& ctx, UploadRequest request) {
  const Timestamp now = ctx.clock.now();
  ImageRecord image;
  image.image_id = ctx.ids.image_id();
  image.tenant_id = request.tenant_id;
  image.file_name = request.file_name;
  image.storage_path = blob_key("images", request.tenant_id, image.image_id, request.info.extension, now);
  image.file_size = request.blob->size();
  image.content_type = request.info.content_type;
  image.sha256 = request.sha256;
  image.width = request.info.width;
  image.height = request.info.height;
  image.format = request.info.format;
  image.color_profile = request.info.color_profile;
  image.uploaded_by = request.uploaded_by;
  image.models = request.options.models;
  nlohmann::ordered_json po;
  po["models"] = request.options.models;
  po["priority"] = priority_name(request.options.priority.value_or(Priority::kNormal));
  po["skipDuplicateCheck"] = request.options.skip_duplicate_check.value_or(false);
  po["generateThumbnail"] = request.options.generate_thumbnail.value_or(true);
  image.processing_options_json = po.dump();
  image.status = ImageStatus::kUploaded;
  image.idempotency_key = request.idempotency_key;
  image.created_at = now;
  image.updated_at = now;

  ImageUploadedEvent event;
  event.envelope = {ctx.ids.event_id(), now, request.tenant_id, std::nullopt};
  image.correlation_id = event.envelope.event_id;

  if (auto st = request.blob->commit(image.storage_path); !st) return std::move(st).error();
  auto outcome = ctx.store.create_image(image, request.options.skip_duplicate_check.value_or(false),
                                        [&](const ImageRecord& img) {
                                          event.data.image_id = img.image_id;
                                          event.data.file_name = img.file_name;
                                          event.data.file_path = ctx.blobs.file_path(img.storage_path);
                                          event.data.file_size = img.file_size;
                                          event.data.content_type = img.content_type;
                                          if (!img.uploaded_by.empty()) event.data.uploaded_by = img.uploaded_by;
                                          event.data.metadata = {img.width, img.height, img.format,
                                                                 img.color_profile.empty() ? std::nullopt
                                                                                           : std::optional(img.color_profile),
                                                                 img.file_name};
                                          const BlobLocation where = ctx.blobs.location(img.storage_path);
                                          event.data.storage_provider = {where.type, where.container, where.name};
                                          event.processing_options = request.options;
                                          event.processing_options.priority = request.options.priority.value_or(Priority::kNormal);
                                          event.processing_options.skip_duplicate_check =
                                              request.options.skip_duplicate_check.value_or(false);
                                          event.processing_options.generate_thumbnail =
                                              request.options.generate_thumbnail.value_or(true);
                                          return to_outbox(event);
                                        },
                                        request.quota);
  if (!outcome || outcome->kind != CreateImageOutcome::Kind::kCreated) {
    if (auto st = ctx.blobs.remove(image.storage_path); !st)
      log_warn("upload.cleanup_failed", {{"imageId", image.image_id}, {"error", st.error().to_string()}});
  }
  if (!outcome) return outcome;
  if (outcome->kind == CreateImageOutcome::Kind::kCreated) {
    ctx.metrics.add("deeplens_uploads_total", {{"outcome", "accepted"}});
    log_info("image.uploaded", {{"tenantId", image.tenant_id}, {"imageId", image.image_id},
                                {"correlationId", image.correlation_id}, {"bytes", static_cast<long long>(image.file_size)},
                                {"format", image.format}});
  } else {
    ctx.metrics.add("deeplens_uploads_total",
                    {{"outcome", outcome->kind == CreateImageOutcome::Kind::kDuplicate ? "duplicate" : "idempotent_replay"}});
  }
  return outcome;
}

Status replay_dead_letter(PipelineContext& ctx, int64_t id) {
  auto letter = ctx.store.get_dead_letter(id);
  if (!letter) return std::move(letter).error();
  if (letter->replayed_at)
    return Error(ErrorCode::kFailedPrecondition, "dead letter was already replayed").with("id", std::to_string(id));
  OutboxMessage message{letter->topic, letter->key, letter->payload, {}};
  auto original = decode_any(letter->payload);
  if (original) {
    AnyEvent next = with_attempt(*original, 1, ctx.options.retry, ctx.ids.event_id(), ctx.clock.now());
    message = to_outbox(next);
  }
  if (auto st = ctx.store.replay_dead_letter(id, message); !st) return st;
  log_info("dead_letter.replayed", {{"id", static_cast<long long>(id)}, {"imageId", letter->image_id},
                                    {"topic", letter->topic}});
  return {};
}

Result<ReplayOutcome> replay_dead_letters(PipelineContext& ctx, const std::string& tenant_id) {
  ReplayOutcome out;
  // In pages: a replayed letter leaves the open list, so each page starts again from the oldest
  // open one; letters that failed to replay stay open, so the page is widened to skip past them.
  constexpr int kPage = 500;
  std::set<int64_t> failed;
  while (true) {
    const int limit = kPage + static_cast<int>(failed.size());
    auto letters = ctx.store.list_dead_letters(false, limit, tenant_id);
    if (!letters) return std::move(letters).error();
    for (const auto& d : *letters) {
      if (failed.count(d.id)) continue;
      if (auto st = replay_dead_letter(ctx, d.id); !st) {
        failed.insert(d.id);
        out.failed.emplace_back(d.id, st.error());
      } else {
        ++out.replayed;
      }
    }
    if (static_cast<int>(letters->size()) < limit) return out;  // that was the last page
  }
}

}  // namespace deeplens
