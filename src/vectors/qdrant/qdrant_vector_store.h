// QdrantVectorStore: a VectorStore over Qdrant's REST API (libcurl, connections kept alive), so
// that any number of processes index and search the same collections (the embedded HNSW store is
// one process at a time). Naming, point ids and the tenant filter: qdrant_rest.h.
//
// Contract, as VectorIndex's: upsert()/upsert_batch()/remove() return OK only after Qdrant
// answered the write with status "completed" (wait=true), so the index stage commits its offset
// after the point is durable in Qdrant. Collections are created on first use (Cosine distance,
// HNSW m / ef_construct from the options) with keyword payload indexes on tenantId (is_tenant in
// payload mode) and imageId; a collection that exists with another dimension is
// kFailedPrecondition (the index stage's COLLECTION_MISMATCH). A collection deleted behind our back
// is created again on the next write.
//
// Errors carry context service=vectors: the server unreachable, a timeout, 5xx or 429 (after
// max_attempts tries, backoff 100 ms doubling) are kUnavailable / kTimeout (the API answers 503
// naming the vector store; the index stage retries through the failure path); a refused api-key is
// kUnavailable too (an operator's problem, not the caller's); Qdrant rejecting a body is
// kInvalidArgument with Qdrant's message. count() and ids() have no error channel: they log and
// answer 0 / what they read.
//
// Not tested against a live Qdrant here (none can be installed on our machines): against a
// stand-in that checks every request and response against Qdrant's OpenAPI document
// (tests/support/qdrant_standin.py); DEEPLENS_TEST_QDRANT_URL runs the same suite against a real one.
// Thread-safety: every method may be called concurrently; handles live as long as the store.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/http_client.h"
#include "vectors/qdrant/qdrant_rest.h"
#include "vectors/vector_index.h"

namespace deeplens {

struct QdrantOptions {
  std::string endpoint;  // http(s)://HOST:PORT (qdrant::endpoint_of of vectors.url)
  std::string api_key;   // sent as the api-key header when set; never logged
  qdrant::Multitenancy multitenancy = qdrant::Multitenancy::kCollection;
  std::chrono::milliseconds timeout{5000};  // one request, connect to last byte
  int max_attempts = 3;
  int hnsw_m = 16;
  int hnsw_ef_construct = 100;
  int hnsw_ef = 0;  // search beam; 0 = Qdrant's default
};

class QdrantVectorStore final : public VectorStore {
 public:
  // Does not contact Qdrant: a store that is down at start-up is reported by ping() and by each
  // call, and the process keeps accepting uploads.
  static std::unique_ptr<QdrantVectorStore> open(QdrantOptions options);
  ~QdrantVectorStore() override;

  Result<VectorIndex*> open_collection(const std::string& name, size_t dimension) override;
  Result<VectorIndex*> lookup_collection(const std::string& name) override;
  // Logical collections with their counts: per Qdrant collection in collection mode, per tenant
  // (a facet on tenantId) in payload mode. Empty (and logged) when Qdrant cannot be read.
  std::vector<CollectionStats> stats() const override;
  Status checkpoint() override { return {}; }
  Status ping() override;

  const QdrantOptions& options() const { return options_; }

  // One call of Qdrant's API: method, path (already escaped), JSON body or null. The parsed answer's
  // "result" on 200; errors as described above (kNotFound on 404).
  Result<nlohmann::json> call(const char* method, const std::string& path, const nlohmann::json& body) const;

 private:
  class Index;
  explicit QdrantVectorStore(QdrantOptions options);
  // The dimension of an existing Qdrant collection, 0 when it does not exist.
  Result<size_t> collection_dimension(const std::string& collection) const;
  // Creates the collection and its payload indexes if needed; kFailedPrecondition on a dimension clash.
  Status ensure_collection(const std::string& collection, size_t dimension) const;
  Index* remember(const qdrant::Target& target, size_t dimension);

  const QdrantOptions options_;
  mutable HttpClient http_;
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<Index>> handles_;  // by logical name; never erased
};

}  // namespace deeplens
