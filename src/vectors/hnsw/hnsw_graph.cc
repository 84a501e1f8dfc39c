#include "vectors/hnsw/hnsw_graph.h"

// Under AddressSanitizer hnswlib's SSE paths read one link past the end of a full neighbour list
// to compute a prefetch address (a real out-of-bounds load that ASan reports); the scalar build
// of the same algorithm does not, and sanitizer builds are about finding our bugs, not speed.
#if defined(__SANITIZE_ADDRESS__) && !defined(NO_MANUAL_VECTORIZATION)
#define NO_MANUAL_VECTORIZATION
#endif

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-variable"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wunused-function"
#include <hnswlib/hnswlib.h>
#pragma GCC diagnostic pop

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <fstream>
#include <queue>

#include "vectors/hnsw/durable_file.h"

namespace deeplens::hnsw {
namespace {

using Hnsw = hnswlib::HierarchicalNSW<float>;

// hnswlib picks AVX kernels only when its header is compiled with -mavx, which would let the
// compiler use AVX anywhere in this file and make the binary fail on CPUs without it. Instead the
// inner-product distance (where HNSW spends its time) is compiled for AVX2+FMA on its own and
// installed at run time when the CPU has them; otherwise hnswlib's SSE kernel stays.
__attribute__((target("avx2,fma"))) float inner_product_distance_avx2(const void* a, const void* b,
                                                                       const void* dim_ptr) {
  size_t dim;
  std::memcpy(&dim, dim_ptr, sizeof dim);
  const auto* x = static_cast<const float*>(a);
  const auto* y = static_cast<const float*>(b);
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(),
         s3 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 32 <= dim; i += 32) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(y + i + 8), s1);
    s2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16), _mm256_loadu_ps(y + i + 16), s2);
    s3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 24), _mm256_loadu_ps(y + i + 24), s3);
  }
  for (; i + 8 <= dim; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), s0);
  const __m256 sum8 = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
  __m128 sum4 = _mm_add_ps(_mm256_castps256_ps128(sum8), _mm256_extractf128_ps(sum8, 1));
  sum4 = _mm_add_ps(sum4, _mm_movehl_ps(sum4, sum4));
  sum4 = _mm_add_ss(sum4, _mm_movehdup_ps(sum4));
  float sum = _mm_cvtss_f32(sum4);
  for (; i < dim; ++i) sum += x[i] * y[i];
  return 1.0f - sum;
}

void use_fastest_distance(Hnsw& index) {
  if (auto f = fastest_inner_product_distance()) index.fstdistfunc_ = f;
}

Error hnswlib_error(const char* what, const std::exception& e) {
  return Error(ErrorCode::kInternal, std::string(what) + ": " + e.what());
}

// hnswlib's saveIndex header, in order (see HierarchicalNSW::saveIndex).
struct SavedHeader {
  size_t offset_level0;
  size_t max_elements;
  size_t element_count;
  size_t size_data_per_element;
  size_t label_offset;
  size_t offset_data;
  int max_level;
  hnswlib::tableint enterpoint;
  size_t max_m;
  size_t max_m0;
  size_t m;
  double mult;
  size_t ef_construction;
};

constexpr uint64_t kSavedHeaderBytes =
    10 * sizeof(size_t) + sizeof(int) + sizeof(hnswlib::tableint) + sizeof(double);

// hnswlib's loadIndex throws halfway through on a bad file and leaves an object whose destructor
// frees garbage; so the whole file is checked here first, against the layout this dimension
// implies, and loadIndex only ever sees a file it will accept.
Status validate_saved_graph(const std::string& path, size_t dimension) {
  auto bad = [&](const std::string& why) {
    return Error(ErrorCode::kInternal, "graph snapshot is corrupt: " + why).with("path", path);
  };
  std::ifstream in(path, std::ios::binary);
  if (!in) return io_error("cannot open graph snapshot", path, errno);
  in.seekg(0, std::ios::end);
  const uint64_t total = static_cast<uint64_t>(in.tellg());
  in.seekg(0, std::ios::beg);
  SavedHeader h{};
  auto read = [&](auto& v) { in.read(reinterpret_cast<char*>(&v), sizeof v); };
  read(h.offset_level0);
  read(h.max_elements);
  read(h.element_count);
  read(h.size_data_per_element);
  read(h.label_offset);
  read(h.offset_data);
  read(h.max_level);
  read(h.enterpoint);
  read(h.max_m);
  read(h.max_m0);
  read(h.m);
  read(h.mult);
  read(h.ef_construction);
  if (!in) return bad("short header");
  const size_t links0 = h.max_m0 * sizeof(hnswlib::tableint) + sizeof(hnswlib::linklistsizeint);
  const size_t data = dimension * sizeof(float);
  if (h.m == 0 || h.m > 10000 || h.max_m != h.m || h.max_m0 != 2 * h.m || h.offset_level0 != 0 ||
      h.offset_data != links0 || h.label_offset != links0 + data ||
      h.size_data_per_element != links0 + data + sizeof(hnswlib::labeltype)) {
    return bad("layout does not match dimension " + std::to_string(dimension));
  }
  if (h.element_count > h.max_elements || h.element_count > (uint64_t{1} << 32)) {
    return bad("element count");
  }
  if (h.element_count > 0 && (h.enterpoint >= h.element_count || h.max_level < 0)) {
    return bad("entry point");
  }
  const uint64_t links_per = h.max_m * sizeof(hnswlib::tableint) + sizeof(hnswlib::linklistsizeint);
  uint64_t pos = kSavedHeaderBytes + h.element_count * h.size_data_per_element;
  if (pos > total) return bad("truncated level 0");
  in.seekg(static_cast<std::streamoff>(pos));
  for (size_t i = 0; i < h.element_count; ++i) {
    unsigned int size = 0;
    read(size);
    if (!in) return bad("truncated link lists");
    pos += sizeof size;
    if (size % links_per != 0 || size / links_per > static_cast<uint64_t>(h.max_level) + 1) {
      return bad("link list size");
    }
    pos += size;
    if (pos > total) return bad("truncated link lists");
    in.seekg(static_cast<std::streamoff>(pos));
  }
  if (pos != total) return bad("trailing bytes");
  return ok_status();
}

}  // namespace

DistanceFunction fastest_inner_product_distance() {
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return avx2 ? inner_product_distance_avx2 : nullptr;
}

HnswGraph::HnswGraph(size_t dimension, std::unique_ptr<hnswlib::InnerProductSpace> space)
    : dimension_(dimension), space_(std::move(space)) {}

HnswGraph::~HnswGraph() = default;

Result<std::unique_ptr<HnswGraph>> HnswGraph::create(size_t dimension, size_t m,
                                                     size_t ef_construction, size_t capacity,
                                                     uint64_t seed) {
  auto space = std::make_unique<hnswlib::InnerProductSpace>(dimension);
  std::unique_ptr<HnswGraph> g(new HnswGraph(dimension, std::move(space)));
  try {
    g->index_ = std::make_unique<Hnsw>(g->space_.get(), std::max<size_t>(capacity, 1), m,
                                       ef_construction, seed);
  } catch (const std::exception& e) {
    return hnswlib_error("cannot allocate the graph", e);
  }
  g->index_->metric_distance_computations = 0;
  g->index_->metric_hops = 0;
  use_fastest_distance(*g->index_);
  return g;
}

Result<std::unique_ptr<HnswGraph>> HnswGraph::load(const std::string& path, size_t dimension,
                                                   size_t min_capacity) {
  if (Status s = validate_saved_graph(path, dimension); !s.ok()) return std::move(s).error();
  auto space = std::make_unique<hnswlib::InnerProductSpace>(dimension);
  std::unique_ptr<HnswGraph> g(new HnswGraph(dimension, std::move(space)));
  // The loading constructor leaves num_deleted_ and the metrics uninitialised before loadIndex
  // counts into them; initialise them ourselves and call loadIndex directly.
  auto index = std::make_unique<Hnsw>(g->space_.get());
  index->num_deleted_ = 0;
  index->metric_distance_computations = 0;
  index->metric_hops = 0;
  index->cur_element_count = 0;
  index->data_level0_memory_ = nullptr;
  index->linkLists_ = nullptr;
  index->visited_list_pool_ = nullptr;
  try {
    index->loadIndex(path, g->space_.get(), min_capacity);
  } catch (const std::exception& e) {
    // Only allocation can fail after validation; the half-loaded object cannot be destroyed
    // safely (hnswlib frees per-element lists it never allocated), so it is leaked.
    (void)index.release();
    return hnswlib_error("cannot load the graph snapshot", e);
  }
  g->index_ = std::move(index);
  use_fastest_distance(*g->index_);
  return g;
}

Result<uint64_t> HnswGraph::save(const std::string& path) const {
  try {
    index_->saveIndex(path);
  } catch (const std::exception& e) {
    return hnswlib_error("cannot save the graph", e);
  }
  uint64_t expected = kSavedHeaderBytes + index_->cur_element_count * index_->size_data_per_element_;
  for (size_t i = 0; i < index_->cur_element_count; ++i) {
    const int level = index_->element_levels_[i];
    expected += sizeof(unsigned int) + (level > 0 ? index_->size_links_per_element_ * level : 0);
  }
  auto size = file_size(path);
  if (!size.ok()) return std::move(size).error();
  if (*size != expected) {
    // saveIndex writes through an unchecked ofstream: a short file means the write failed.
    return Error(ErrorCode::kIoError, "graph snapshot is short (disk full?)")
        .with("path", path)
        .with("bytes", std::to_string(*size))
        .with("expected", std::to_string(expected));
  }
  return *size;
}

size_t HnswGraph::capacity() const { return index_->max_elements_; }
size_t HnswGraph::element_count() const { return index_->cur_element_count; }

Status HnswGraph::reserve(size_t elements) {
  if (elements <= index_->max_elements_) return ok_status();
  try {
    index_->resizeIndex(elements);
  } catch (const std::exception& e) {
    return Error(ErrorCode::kResourceExhausted, std::string("cannot grow the graph: ") + e.what())
        .with("elements", std::to_string(elements));
  }
  return ok_status();
}

Status HnswGraph::add(uint64_t label, const float* v) {
  try {
    index_->addPoint(v, static_cast<hnswlib::labeltype>(label));
  } catch (const std::exception& e) {
    return hnswlib_error("graph insert failed", e);
  }
  return ok_status();
}

Status HnswGraph::mark_deleted(uint64_t label) {
  try {
    index_->markDelete(static_cast<hnswlib::labeltype>(label));
  } catch (const std::exception& e) {
    return hnswlib_error("graph delete failed", e);
  }
  return ok_status();
}

bool HnswGraph::copy_vector(uint64_t label, float* out) const {
  auto it = index_->label_lookup_.find(static_cast<hnswlib::labeltype>(label));
  if (it == index_->label_lookup_.end() || index_->isMarkedDeleted(it->second)) return false;
  std::memcpy(out, index_->getDataByInternalId(it->second), dimension_ * sizeof(float));
  return true;
}

Result<std::vector<ScoredLabel>> HnswGraph::search(const float* query, size_t k) const {
  std::vector<ScoredLabel> out;
  if (k == 0 || index_->cur_element_count == 0) return out;
  std::priority_queue<std::pair<float, hnswlib::labeltype>> queue;  // furthest first
  try {
    queue = index_->searchKnn(query, k);
  } catch (const std::exception& e) {
    return hnswlib_error("graph search failed", e);
  }
  out.resize(queue.size());
  for (size_t i = out.size(); i-- > 0;) {
    out[i] = {1.0f - queue.top().first, static_cast<uint64_t>(queue.top().second)};
    queue.pop();
  }
  return out;
}

std::vector<ScoredLabel> HnswGraph::exact_search(const float* query, size_t k) const {
  std::vector<ScoredLabel> out;
  if (k == 0) return out;
  const auto dist = index_->fstdistfunc_;
  void* param = index_->dist_func_param_;
  // Max-heap on distance holding the k best so far.
  std::priority_queue<std::pair<float, hnswlib::tableint>> best;
  const size_t n = index_->cur_element_count;
  for (hnswlib::tableint i = 0; i < n; ++i) {
    if (index_->isMarkedDeleted(i)) continue;
    const float d = dist(query, index_->getDataByInternalId(i), param);
    if (best.size() < k) {
      best.emplace(d, i);
    } else if (d < best.top().first) {
      best.pop();
      best.emplace(d, i);
    }
  }
  out.resize(best.size());
  for (size_t i = out.size(); i-- > 0;) {
    out[i] = {1.0f - best.top().first, static_cast<uint64_t>(index_->getExternalLabel(best.top().second))};
    best.pop();
  }
  return out;
}

void HnswGraph::set_ef_search(size_t ef) { index_->setEf(ef); }
void HnswGraph::set_ef_construction(size_t ef) {
  index_->ef_construction_ = std::max(ef, index_->M_);
}

void HnswGraph::for_each_element(const std::function<void(uint64_t, bool)>& fn) const {
  for (hnswlib::tableint i = 0; i < index_->cur_element_count; ++i) {
    fn(static_cast<uint64_t>(index_->getExternalLabel(i)), index_->isMarkedDeleted(i));
  }
}

}  // namespace deeplens::hnsw
