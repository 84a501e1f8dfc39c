// HnswGraph: owns one hnswlib::HierarchicalNSW<float> over the inner-product space (cosine on
// L2-normalised vectors; hnswlib's distance is 1 - dot, reported here as the score dot).
// It is the only translation unit that includes hnswlib: hnswlib.h defines non-inline functions,
// and it stays out of every other header. It also contains hnswlib 0.6.2's rough edges (members
// left uninitialised on load, exceptions for expected errors, an unchecked ofstream on save).
//
// Labels are dense uint64 chosen by the caller. The stored vector lives in hnswlib's level-0 block,
// so exact search and get() read it from there instead of keeping a second copy.
//
// Thread-safety follows hnswlib: add() may run concurrently with add(); search(), exact_search(),
// copy_vector(), for_each_element() and save() concurrently with each other. Everything else, and
// any mix of a mutation with a read, needs external exclusion (HnswIndex's shared_mutex).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/result.h"

namespace hnswlib {
template <typename dist_t>
class HierarchicalNSW;
class InnerProductSpace;
}  // namespace hnswlib

namespace deeplens::hnsw {

// The inner-product distance (1 - <a, b>) the graph installs in hnswlib when the CPU has AVX2 and
// FMA, with hnswlib's DISTFUNC signature; nullptr on other CPUs (hnswlib's own kernel is used then).
// Public so that bench/vector_recall can give hnswlib-called-directly the same arithmetic.
using DistanceFunction = float (*)(const void* a, const void* b, const void* dimension);
DistanceFunction fastest_inner_product_distance();

struct ScoredLabel {
  float score = 0;  // dot product of the normalised vectors
  uint64_t label = 0;
};

class HnswGraph {
 public:
  static Result<std::unique_ptr<HnswGraph>> create(size_t dimension, size_t m,
                                                   size_t ef_construction, size_t capacity,
                                                   uint64_t seed);
  // Loads a file written by save(); the file is validated before hnswlib reads it.
  static Result<std::unique_ptr<HnswGraph>> load(const std::string& path, size_t dimension,
                                                 size_t min_capacity);
  ~HnswGraph();
  HnswGraph(const HnswGraph&) = delete;
  HnswGraph& operator=(const HnswGraph&) = delete;

  // Writes the graph to path (no fsync) and returns the file size after checking it.
  Result<uint64_t> save(const std::string& path) const;

  size_t dimension() const { return dimension_; }
  size_t capacity() const;
  size_t element_count() const;  // elements ever added, including ones marked deleted
  Status reserve(size_t elements);
  // Inserts label, or replaces its vector (reviving it if marked deleted). v has dimension() floats.
  Status add(uint64_t label, const float* v);
  Status mark_deleted(uint64_t label);
  // Copies the vector of a live label into out (dimension() floats); false if absent or deleted.
  bool copy_vector(uint64_t label, float* out) const;
  // Up to k nearest by HNSW (best first); ef is max(set_ef_search, k).
  Result<std::vector<ScoredLabel>> search(const float* query, size_t k) const;
  // The exact k nearest over all live elements (best first).
  std::vector<ScoredLabel> exact_search(const float* query, size_t k) const;
  void set_ef_search(size_t ef);
  void set_ef_construction(size_t ef);
  // Every element: its label and whether it is marked deleted.
  void for_each_element(const std::function<void(uint64_t label, bool deleted)>& fn) const;

 private:
  HnswGraph(size_t dimension, std::unique_ptr<hnswlib::InnerProductSpace> space);

  size_t dimension_;
  std::unique_ptr<hnswlib::InnerProductSpace> space_;
  std::unique_ptr<hnswlib::HierarchicalNSW<float>> index_;
};

}  // namespace deeplens::hnsw
