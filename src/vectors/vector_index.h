// VectorIndex: the vectors of one collection (one tenant and one model), searchable by cosine
// similarity. VectorStore: the set of collections, created on first use.
//
// Collections are named collection_name(tenant, model) = "tenant_<slug>_<model>_vectors", one per
// (tenant, model) pair: the name is injective (see collection_name below).
//
// Durability contract: once upsert() or remove() returns OK the change survives a crash (kill -9)
// of the process; on open, every acknowledged change is searchable again.
// Thread-safety: all methods may be called concurrently; searches run in parallel with each other.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace deeplens {

// One element of a batch upsert; the views must stay valid for the duration of the call.
struct VectorUpsert {
  std::string_view id;
  std::span<const float> vector;
  // Which version of the model made the vector (Qdrant keeps it in the point's payload as
  // modelVersion; the embedded index ignores it). May be empty.
  std::string_view model_version = {};
};

// How one search trades speed for recall; the defaults are the index's own settings.
struct SearchOptions {
  // HNSW candidate list size for this query: raises the index's ef_search (never lowers it;
  // 0 = the index's). Qdrant: `params.hnsw_ef`.
  size_t ef = 0;
  // Compare with every vector: perfect recall, cost linear in the collection (callers bound it).
  bool exact = false;
};

struct SearchHit {
  std::string id;  // the imageId
  float score = 0;  // cosine similarity in [-1, 1], higher is closer
};

class VectorIndex {
 public:
  virtual ~VectorIndex() = default;
  virtual const std::string& name() const = 0;
  virtual size_t dimension() const = 0;
  virtual size_t count() const = 0;

  // Inserts or replaces the vector stored under id (idempotent). The vector is L2-normalised by
  // the index. A vector of the wrong dimension, or with NaN/Inf, is kInvalidArgument.
  virtual Status upsert(std::string_view id, std::span<const float> vector) = 0;
  // upsert(), also recording which version of the model made the vector: Qdrant keeps it in the
  // point's payload (modelVersion); the embedded index has nowhere to keep it and ignores it.
  virtual Status upsert_with_version(std::string_view id, std::span<const float> vector, std::string_view model_version) {
    (void)model_version;
    return upsert(id, vector);
  }
  // upsert() of every element; a later duplicate id wins. Ids, dimensions and NaN/Inf are checked
  // before anything is applied, so such a bad element rejects the whole batch (kInvalidArgument)
  // and changes nothing. Implementations override it to share one log write and one fsync and to
  // insert in parallel (HnswIndex: all-or-nothing); the default checks, then loops over upsert().
  virtual Status upsert_batch(std::span<const VectorUpsert> batch);
  // Removes id; removing an absent id is OK (idempotent).
  virtual Status remove(std::string_view id) = 0;
  // Every id stored, in no order (a snapshot; for sweeping, not for serving).
  virtual std::vector<std::string> ids() const = 0;
  // What upsert_batch() checks before applying anything: ids not empty, vectors finite and of the
  // collection's dimension (kInvalidArgument naming the element).
  Status validate_batch(std::span<const VectorUpsert> batch) const;
  // The stored (normalised) vector of id, or kNotFound.
  virtual Result<std::vector<float>> get(std::string_view id) const = 0;
  // Up to k hits with score >= min_score, best first.
  virtual Result<std::vector<SearchHit>> search(std::span<const float> query, size_t k, float min_score,
                                                const SearchOptions& options) const = 0;
  Result<std::vector<SearchHit>> search(std::span<const float> query, size_t k, float min_score) const {
    return search(query, k, min_score, SearchOptions{});
  }
};

struct CollectionStats {
  std::string name;
  size_t dimension = 0;
  size_t count = 0;
};

class VectorStore {
 public:
  virtual ~VectorStore() = default;
  // The collection, created with this dimension if it does not exist. An existing collection with
  // another dimension is kFailedPrecondition.
  virtual Result<VectorIndex*> open_collection(const std::string& name, size_t dimension) = 0;
  // The collection if it exists, nullptr if it does not, an error when the store cannot tell (a
  // remote store that is down: kUnavailable / kTimeout with context service=vectors).
  virtual Result<VectorIndex*> lookup_collection(const std::string& name) = 0;
  // lookup_collection() with "cannot tell" as nullptr, for callers that only clean up.
  VectorIndex* find_collection(const std::string& name) {
    auto found = lookup_collection(name);
    return found ? *found : nullptr;
  }
  virtual std::vector<CollectionStats> stats() const = 0;
  // Flushes snapshots so the next start replays less; called on clean shutdown.
  virtual Status checkpoint() = 0;
  // Whether the store answers (for /readyz); the embedded store always does.
  virtual Status ping() { return {}; }
};

// "tenant_<tenant>_<model>_vectors" with both kept as they are: "acmecorp" + "resnet50" ->
// "tenant_acmecorp_resnet50_vectors" (the spec's name); "acme-corp" -> "tenant_acme-corp_..." (the
// spec drops the '-', which made acme-corp and acmecorp share a collection). Injective: tenant
// slugs hold no '_', so the tenant ends at the first '_'; a character outside [a-z0-9-] (tenant) or
// [a-z0-9_-] (model) — never in a validated name — is escaped as "~XX" (hex).
std::string collection_name(std::string_view tenant_id, std::string_view model_name);

// The name before collection names became injective ('-' dropped from the tenant, every character
// outside [a-z0-9_] of the model replaced by '_'); start-up migrates such collections.
std::string legacy_collection_name(std::string_view tenant_id, std::string_view model_name);

}  // namespace deeplens
