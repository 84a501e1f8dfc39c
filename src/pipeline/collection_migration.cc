#include "pipeline/collection_migration.h"

#include <set>

#include "common/log.h"

namespace deeplens {

Result<int64_t> migrate_collection_names(MetadataStore& store, VectorStore& vectors) {
  std::set<std::string> existing;
  for (const auto& c : vectors.stats()) existing.insert(c.name);
  if (existing.empty()) return int64_t{0};
  auto tenants = store.list_tenants();
  if (!tenants) return std::move(tenants).error();
  int64_t moved = 0;
  for (const auto& tenant : *tenants) {
    // Only a tenant some legacy name of which exists can have vectors to move; the tenant part of
    // the legacy name is the slug without '-'.
    std::string legacy_prefix = legacy_collection_name(tenant.id, "");  // "tenant_<slug>__vectors"
    legacy_prefix.resize(legacy_prefix.size() - std::string("_vectors").size());
    bool candidate = false;
    for (const auto& name : existing) candidate = candidate || name.rfind(legacy_prefix, 0) == 0;
    if (!candidate) continue;
    std::string cursor;
    do {
      auto page = store.list_images(tenant.id, std::nullopt, 500, cursor);
      if (!page) return std::move(page).error();
      for (const auto& image : page->images) {
        for (const auto& model : image.models) {
          const std::string old_name = legacy_collection_name(tenant.id, model);
          const std::string new_name = collection_name(tenant.id, model);
          if (old_name == new_name || !existing.count(old_name)) continue;
          VectorIndex* from = vectors.find_collection(old_name);
          if (!from) continue;
          auto vector = from->get(image.image_id);
          if (!vector) continue;  // not indexed, or already moved
          auto to = vectors.open_collection(new_name, from->dimension());
          if (!to) return std::move(to).error();
          if (auto st = (*to)->upsert(image.image_id, *vector); !st) return std::move(st).error();
          if (auto st = from->remove(image.image_id); !st) return std::move(st).error();
          ++moved;
        }
      }
      cursor = page->next_cursor;
    } while (!cursor.empty());
  }
  if (moved > 0) log_info("vectors.collections_renamed", {{"vectorsMoved", static_cast<long long>(moved)}});
  return moved;
}

}  // namespace deeplens
