#include "pipeline/delete.h"

#include <nlohmann/json.hpp>

#include "blob/blob_store.h"
#include "common/log.h"
#include "events/topics.h"

namespace deeplens {

Status delete_image(PipelineContext& ctx, const std::string& tenant_id, const std::string& image_id) {
  auto image = ctx.store.get_image(tenant_id, image_id);
  if (!image) return image.error().code == ErrorCode::kNotFound ? Status() : Status(std::move(image).error());
  // The "image.deleted" webhook event (schemas/webhooks/image.deleted.schema.json), queued with the delete.
  const Timestamp now = ctx.clock.now();
  nlohmann::ordered_json event;
  event["eventId"] = ctx.ids.event_id();
  event["eventType"] = "image.deleted";
  event["eventVersion"] = event_types::kEventVersion;
  event["timestamp"] = format_iso8601(now);
  event["tenantId"] = tenant_id;
  event["correlationId"] = image->correlation_id;
  event["data"] = {{"imageId", image_id}, {"fileName", image->file_name}, {"sha256", image->sha256},
                   {"deletedAt", format_iso8601(now)}};
  const WebhookEvent deleted{tenant_id, "image.deleted", event["eventId"].get<std::string>(), event.dump()};
  if (auto st = ctx.store.delete_image(tenant_id, image_id, &deleted); !st && st.error().code != ErrorCode::kNotFound)
    return st;
  for (const auto& model : image->models)
    if (VectorIndex* index = ctx.vectors.find_collection(collection_name(tenant_id, model)))
      if (auto st = index->remove(image_id); !st)
        log_warn("delete.vector_failed", {{"imageId", image_id}, {"error", st.error().to_string()}});
  const std::string thumbnail = blob_key("thumbnails", tenant_id, image_id, "jpg", image->created_at);
  for (const auto& key : {image->storage_path, image->thumbnail_path, thumbnail})
    if (!key.empty())
      if (auto st = ctx.blobs.remove(key); !st)
        log_warn("delete.blob_failed", {{"imageId", image_id}, {"error", st.error().to_string()}});
  log_info("image.deleted", {{"tenantId", tenant_id}, {"imageId", image_id}});
  return {};
}

}  // namespace deeplens
