// Moves vectors stored under a legacy collection name (before collection names became injective,
// "acme-corp" and "acmecorp" shared tenant_acmecorp_<model>_vectors) into the collection
// collection_name() gives today. Only the images of the tenant whose name changed move, so a
// collection two tenants shared is split correctly: the other tenant's vectors stay where its
// name still points.
//
// Crash-safe and idempotent: each vector is upserted into its new collection before it is removed
// from the old one, and a run after a crash moves what is left. Run at start, before the pipeline
// and search start, in the process that owns the vector store.
#pragma once

#include "common/result.h"
#include "store/metadata_store.h"
#include "vectors/vector_index.h"

namespace deeplens {

// Returns how many vectors moved.
Result<int64_t> migrate_collection_names(MetadataStore& store, VectorStore& vectors);

}  // namespace deeplens
