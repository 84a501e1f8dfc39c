#include "pipeline/search.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <span>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "common/log.h"

namespace deeplens {
namespace {

using SteadyClock = std::chrono::steady_clock;

int64_t ms_since(SteadyClock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - start).count();
}
double seconds_since(SteadyClock::time_point start) {
  return std::chrono::duration<double>(SteadyClock::now() - start).count();
}

Error invalid(std::string field, std::string message) {
  return Error(ErrorCode::kInvalidArgument, std::move(message)).with("field", std::move(field));
}

// Hits the index is asked for beyond top_k on the first round: room for a few deleted images
// (whose vectors linger) and for the query image itself, without a second round in the usual case.
size_t initial_fetch(size_t top_k, bool excludes_query) {
  return top_k + (excludes_query ? 1 : 0) + std::max<size_t>(8, top_k / 4);
}
// A collection that is mostly stale vectors must not turn one search into a scan of everything:
// past this many times the first round's size, the search returns what it found (and logs it).
constexpr size_t kMaxFetchGrowth = 64;

Status check_query(const SearchQuery& q) {
  if (q.tenant_id.empty()) return invalid("tenantId", "tenantId is required");
  if (q.image_bytes.empty() == q.image_id.empty())
    return invalid("image", q.image_id.empty()
                                ? "give the image to search by: either an image file or an imageId"
                                : "give either an image file or an imageId to search by, not both");
  if (q.top_k < 1 || q.top_k > kMaxSearchTopK)
    return invalid("topK", "topK must be between 1 and " + std::to_string(kMaxSearchTopK) + ", got " +
                               std::to_string(q.top_k));
  if (!(q.min_score >= -1.0f && q.min_score <= 1.0f))  // NaN fails both comparisons
    return invalid("minScore", "minScore must be a cosine similarity between -1 and 1, got " +
                                   std::to_string(q.min_score));
  if (q.model.empty()) return invalid("model", "model is required");
  if (q.ef > kMaxSearchEf)
    return invalid("ef", "ef must be between 1 and " + std::to_string(kMaxSearchEf) + ", got " + std::to_string(q.ef));
  if (q.offset > kMaxSearchOffset)
    return invalid("offset", "offset must be between 0 and " + std::to_string(kMaxSearchOffset) + ", got " +
                                 std::to_string(q.offset));
  if (q.filter.exclude_ids.size() > kMaxSearchExcludeIds)
    return invalid("filter.excludeIds", "filter.excludeIds holds at most " + std::to_string(kMaxSearchExcludeIds) +
                                            " ids, got " + std::to_string(q.filter.exclude_ids.size()));
  if (q.filter.uploaded_after && q.filter.uploaded_before && *q.filter.uploaded_before <= *q.filter.uploaded_after)
    return invalid("filter.uploadedBefore", "filter.uploadedBefore must be later than filter.uploadedAfter");
  return {};
}

bool passes(const SearchFilter& f, const ImageRecord& image, const std::unordered_set<std::string>& excluded) {
  if (f.uploaded_after && image.created_at < *f.uploaded_after) return false;
  if (f.uploaded_before && image.created_at >= *f.uploaded_before) return false;
  if (!f.statuses.empty() && std::find(f.statuses.begin(), f.statuses.end(), image.status) == f.statuses.end())
    return false;
  return !excluded.count(image.image_id);
}

std::string join(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

// The error for an image of the tenant that has no vector in the model's collection; the message
// says why as far as the image's record tells, and what to do.
Error not_indexed(const ImageRecord& image, const std::string& model) {
  std::string message;
  const bool requested = std::find(image.models.begin(), image.models.end(), model) != image.models.end();
  if (!requested && !image.models.empty()) {
    message = "image " + image.image_id + " was not processed with model '" + model + "' (processed with: " +
              join(image.models) + "); search with one of those models";
  } else if (image.status == ImageStatus::kFailed) {
    message = "image " + image.image_id + " is not indexed for model '" + model + "': its processing failed" +
              (image.error_code.empty() ? "" : " (" + image.error_code + ")") + "; replay it or upload it again";
  } else {
    message = "image " + image.image_id + " is not indexed yet for model '" + model + "' (status " +
              image_status_name(image.status) + "); search again when its status is completed";
  }
  return Error(ErrorCode::kFailedPrecondition, std::move(message))
      .with("field", "imageId")
      .with("imageId", image.image_id)
      .with("model", model)
      .with("status", image_status_name(image.status));
}

// The query image's vector from its encoded bytes: the same checks as an upload (probe with the
// configured limits), the same decode as the extractor stage, one extraction.
Result<std::vector<float>> vector_of_bytes(PipelineContext& ctx, Extractor& model, const std::string& bytes,
                                           const QueryExtract& extract) {
  const auto span = std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  auto probed = probe_buffer(span, ctx.options.limits);
  if (!probed) return std::move(probed).error();  // unchanged: "reason" tells the API what to answer
  const ModelInfo& info = model.info();
  DecodedImage pixels;
  if (info.input_width > 0) {
    auto decoded = decode_for_model(span, info.input_width, info.input_height, ctx.options.limits);
    if (!decoded) return std::move(decoded).error();
    pixels = std::move(decoded).value();
  }
  const ExtractorInput input{pixels.rgb.empty() ? nullptr : &pixels, bytes, "search-query"};
  std::vector<float> vector;
  if (extract) {
    auto v = extract(model, input);
    if (!v) return std::move(v).error().with("model", info.name);
    vector = std::move(v).value();
  } else {
    auto vectors = model.extract(std::span(&input, 1));
    if (!vectors) return std::move(vectors).error().with("model", info.name);
    if (vectors->size() == 1) vector = std::move((*vectors)[0]);
  }
  if (vector.size() != static_cast<size_t>(info.dimension))
    return Error(ErrorCode::kInternal, "extractor returned a malformed result for the query image")
        .with("model", info.name)
        .with("expected_dimension", std::to_string(info.dimension));
  return vector;
}

// The stored vector of one of the tenant's images. Looks the image up in the tenant's store first,
// so another tenant's image (even one in the same collection) is reported as absent.
Result<std::vector<float>> vector_of_image(PipelineContext& ctx, const SearchQuery& q, const std::string& model,
                                           VectorIndex* index) {
  auto image = ctx.store.get_image(q.tenant_id, q.image_id);
  if (!image) {
    if (image.error().code != ErrorCode::kNotFound) return std::move(image).error();
    return Error(ErrorCode::kNotFound, "image not found").with("field", "imageId").with("imageId", q.image_id);
  }
  if (!index) return not_indexed(*image, model);
  auto vector = index->get(q.image_id);
  if (!vector) {
    if (vector.error().code != ErrorCode::kNotFound) return std::move(vector).error();
    return not_indexed(*image, model);
  }
  return vector;
}

// Searches the index for offset + top_k hits that are images of the tenant passing the filter
// (skipping the query image and ids without a record), fetching more rounds while hits were
// skipped and more may exist; returns the top_k after the first `offset`.
Result<std::vector<SearchResultItem>> ranked_images(PipelineContext& ctx, const SearchQuery& q,
                                                    const VectorIndex& index, std::span<const float> query) {
  const std::string& exclude = q.image_id;  // empty when searching by bytes
  const std::unordered_set<std::string> excluded(q.filter.exclude_ids.begin(), q.filter.exclude_ids.end());
  const size_t wanted = q.offset + q.top_k;
  const size_t first = initial_fetch(wanted, !exclude.empty()) + (q.filter.empty() ? 0 : wanted);
  // Records looked up in an earlier round (nullopt: not the tenant's image), so a later round
  // does not read them again.
  std::unordered_map<std::string, std::optional<ImageRecord>> records;
  std::vector<SearchResultItem> results;
  size_t skipped = 0;
  for (size_t fetch = first;; fetch *= 2) {
    auto hits = index.search(query, fetch, q.min_score, SearchOptions{q.ef, q.exact});
    if (!hits) return std::move(hits).error().with("collection", index.name());
    // The records of this round's new hits, in one read (a hit without one is not the tenant's).
    std::vector<std::string> unknown;
    for (const auto& hit : *hits)
      if (hit.id != exclude && !records.contains(hit.id)) unknown.push_back(hit.id);
    if (!unknown.empty()) {
      auto images = ctx.store.get_images(q.tenant_id, unknown);
      if (!images) return std::move(images).error();
      for (const auto& id : unknown) records.emplace(id, std::nullopt);
      for (auto& image : *images) records[image.image_id] = std::move(image);
    }
    results.clear();
    skipped = 0;
    for (auto& hit : *hits) {
      if (hit.id == exclude) continue;
      const auto known = records.find(hit.id);
      if (!known->second || !passes(q.filter, *known->second, excluded)) {
        ++skipped;
        continue;
      }
      results.push_back(SearchResultItem{hit.id, hit.score, *known->second});
      if (results.size() == wanted) break;
    }
    const bool exhausted = hits->size() < fetch || fetch >= index.count();
    if (results.size() >= wanted || exhausted) break;
    if (fetch * 2 > first * kMaxFetchGrowth) {
      log_warn("search.stale_vectors", {{"tenantId", q.tenant_id}, {"collection", index.name()},
                                        {"fetched", fetch}, {"skipped", skipped}, {"returned", results.size()}});
      break;
    }
  }
  results.erase(results.begin(), results.begin() + static_cast<std::ptrdiff_t>(std::min(q.offset, results.size())));
  return results;
}

}  // namespace

Result<SearchResponse> search_images(PipelineContext& ctx, const SearchQuery& q, const QueryExtract& extract) {
  if (auto st = check_query(q); !st) return std::move(st).error();
  Extractor* model = ctx.models(q.model);
  if (!model)
    return Error(ErrorCode::kNotFound, "model '" + q.model + "' is not configured")
        .with("field", "model")
        .with("model", q.model);

  SearchResponse response;
  response.model = model->info().name;
  response.collection = collection_name(q.tenant_id, response.model);
  const bool by_image = !q.image_bytes.empty();

  std::vector<float> query;
  const auto t0 = SteadyClock::now();
  if (by_image) {
    auto v = vector_of_bytes(ctx, *model, q.image_bytes, extract);
    if (!v) return std::move(v).error();
    query = std::move(v).value();
    response.extraction_ms = ms_since(t0);
  }
  const auto t1 = SteadyClock::now();
  // Looked up after the extraction, so a collection created meanwhile is searched.
  auto found = ctx.vectors.lookup_collection(response.collection);
  if (!found) return std::move(found).error();
  VectorIndex* index = *found;
  if (!by_image) {
    auto v = vector_of_image(ctx, q, response.model, index);
    if (!v) return std::move(v).error();
    query = std::move(v).value();
  }

  if (index) {
    if (index->dimension() != query.size())
      return Error(ErrorCode::kFailedPrecondition,
                   "collection " + response.collection + " holds " + std::to_string(index->dimension()) +
                       "-d vectors but model '" + response.model + "' gives " + std::to_string(query.size()) +
                       "-d; the collection was built by another version of the model and must be reindexed")
          .with("collection", response.collection)
          .with("model", response.model);
    if (q.exact && index->count() > kMaxExactSearchVectors)
      return invalid("exact", "exact search is limited to collections of at most " +
                                  std::to_string(kMaxExactSearchVectors) + " vectors; this one holds " +
                                  std::to_string(index->count()) + " (raise ef instead)");
    auto results = ranked_images(ctx, q, *index, query);
    if (!results) return std::move(results).error();
    response.results = std::move(results).value();
  }
  response.search_ms = ms_since(t1);

  const MetricLabels labels{{"model", response.model}, {"by", by_image ? "image" : "imageId"}};
  ctx.metrics.add("deeplens_searches_total", labels);
  ctx.metrics.observe("deeplens_search_seconds", labels, seconds_since(t0));
  log_debug("search.completed", {{"tenantId", q.tenant_id}, {"model", response.model},
                                 {"by", by_image ? "image" : "imageId"}, {"results", response.results.size()},
                                 {"extractionMs", static_cast<long long>(response.extraction_ms)},
                                 {"searchMs", static_cast<long long>(response.search_ms)}});
  return response;
}

}  // namespace deeplens
