// Visual search: the images of one tenant most similar to a query image, by one model's vectors.
// The query is either an image (encoded bytes: probed, decoded and run through the model here) or
// the id of an image the tenant already has (its stored vector is reused, and it is left out of
// its own results). Hits come from the collection collection_name(tenant, model) and are enriched
// with the tenant's ImageRecord from the MetadataStore; a hit without a record in the tenant's
// store (the image was deleted while its vector lingers, or it belongs to another tenant whose id
// has the same collection slug) is skipped, and the index is asked for more so that top_k results
// still come back when they exist.
//
// Errors (Error::context["field"] names the request field at fault, in the API's spelling):
//   kInvalidArgument   "tenantId" empty; "image" neither or both of image_bytes / image_id;
//                      "topK" outside 1..1000; "minScore" outside [-1, 1] or NaN; "model" empty;
//                      "offset" over 1000; "filter.excludeIds" over 1000 ids;
//                      "filter.uploadedBefore" not after filter.uploadedAfter; "ef" over 1024;
//                      "exact" on a collection of more than kMaxExactSearchVectors
//   kNotFound          "model" unknown; "imageId" no such image in the tenant (other tenants'
//                      images are indistinguishable from absent ones)
//   kFailedPrecondition "imageId" the image exists but has no vector for the model (not indexed
//                      yet, failed, or processed with other models)
//   imaging errors     the query bytes' probe/decode error unchanged (context "reason":
//                      "not_an_image", "too_large", "corrupt" ...), so the API maps it as for uploads
//   other codes        a backend or the extractor failed (kUnavailable, kIoError ...)
// A collection that does not exist yet (nothing indexed for this tenant and model) gives an empty
// result, not an error, when searching by image bytes.
//
// Ownership: search_images keeps nothing; the response owns copies of everything it returns.
// Thread-safety: search_images may be called from any number of threads at once (the backends
// and extractors behind PipelineContext are thread-safe; this code has no state of its own).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "pipeline/context.h"
#include "store/metadata_store.h"

namespace deeplens {

inline constexpr size_t kMaxSearchTopK = 1000;
inline constexpr size_t kMaxSearchOffset = 1000;
inline constexpr size_t kMaxSearchExcludeIds = 1000;
inline constexpr size_t kMaxSearchEf = 1024;
// An exact search compares the query with every vector (~43 ms at 100k x 1280-d on 2 cores,
// bench/README.md): allowed up to this many vectors, so one request cannot hold a core for seconds.
inline constexpr size_t kMaxExactSearchVectors = 200000;

// Which of the nearest images may be results. Applied to the hits in order of similarity (the
// index is asked for more while filtered hits leave fewer than offset + top_k), so a filter that
// keeps very few images may return fewer than exist: the search stops after 64 times the first
// round's hits.
struct SearchFilter {
  std::optional<Timestamp> uploaded_after;   // createdAt >= this
  std::optional<Timestamp> uploaded_before;  // createdAt < this
  std::vector<ImageStatus> statuses;         // empty: any status
  std::vector<std::string> exclude_ids;      // at most kMaxSearchExcludeIds
  bool empty() const { return !uploaded_after && !uploaded_before && statuses.empty() && exclude_ids.empty(); }
};

struct SearchQuery {
  std::string tenant_id;
  std::string model;     // a registered model name (the API fills in the default)
  size_t top_k = 10;     // 1..kMaxSearchTopK
  float min_score = 0;   // cosine similarity threshold in [-1, 1]
  size_t offset = 0;     // results to skip (paging): 0..kMaxSearchOffset
  size_t ef = 0;         // HNSW candidates for this query, 0..kMaxSearchEf (0: the collection's)
  bool exact = false;    // exact nearest neighbours; collections of at most kMaxExactSearchVectors
  SearchFilter filter;
  // Exactly one of:
  std::string image_bytes;  // an encoded image (JPEG, PNG, ...), checked like an upload
  std::string image_id;     // an image of the tenant already indexed for `model`
};

struct SearchResultItem {
  std::string image_id;
  float score = 0;    // cosine similarity in [-1, 1], higher is closer
  ImageRecord image;  // file name, thumbnail path, size ... as stored for the tenant
};

struct SearchResponse {
  std::vector<SearchResultItem> results;  // best first, at most top_k, all with score >= min_score
  std::string model;                      // the model's name as registered
  std::string collection;                 // collection_name(tenant, model)
  int64_t extraction_ms = 0;              // probe + decode + extract of the query image; 0 by id
  int64_t search_ms = 0;                  // vector lookup, index search and enrichment
};

// How the query image goes through the model: by default one extract() of the one image; the
// API passes its QueryBatcher (features/query_batcher.h) so that concurrent queries share forwards.
using QueryExtract = std::function<Result<std::vector<float>>(Extractor& model, const ExtractorInput& input)>;

Result<SearchResponse> search_images(PipelineContext& ctx, const SearchQuery& q, const QueryExtract& extract = {});

}  // namespace deeplens
