#include "features/builtin/builtin_descriptor.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <string>
#include <vector>

namespace deeplens {
namespace {

// ---- layout of the vector ---------------------------------------------------------------------
// colour: 2x2 cells x (8 hues x 2 chroma levels x 3 values + 4 grey levels)
constexpr int kColourGrid = 2;
constexpr int kHueBins = 8;     // circular, 45 degrees each
constexpr int kChromaBins = 2;  // muted / vivid
constexpr int kValueBins = 3;   // dark / mid / bright
constexpr int kGreyBins = 4;    // achromatic pixels by value
constexpr int kChromaticBins = kHueBins * kChromaBins * kValueBins;
constexpr int kColourCellBins = kChromaticBins + kGreyBins;                 // 52
constexpr int kColourDims = kColourGrid * kColourGrid * kColourCellBins;   // 208
// layout: 8x8 luma means, 4x4 Cb and Cr means, 4x4 luma standard deviations (texture)
constexpr int kLumaGrid = 8;
constexpr int kCoarseGrid = 4;
constexpr int kLayoutDims = kLumaGrid * kLumaGrid + 3 * kCoarseGrid * kCoarseGrid;  // 112
// edges: 4x4 cells x 12 unsigned gradient orientations (15 degrees each)
constexpr int kEdgeGrid = 4;
constexpr int kOrientationBins = 12;
constexpr int kEdgeDims = kEdgeGrid * kEdgeGrid * kOrientationBins;  // 192

static_assert(kColourDims + kLayoutDims + kEdgeDims == kBuiltinDescriptorDimension);

// Histograms are first accumulated on a finer grid of sub-cells (a few adds per pixel), then
// spread over the cells with bilinear weights taken at each sub-cell's centre: the cheap form of
// the per-pixel soft spatial binning HOG/SIFT use, so content moving across a cell border moves
// the vector smoothly (crops, small shifts).
constexpr int kColourSubGrid = 8;
constexpr int kEdgeSubGrid = 16;

constexpr int kMinInput = 16;

// Per-block post-processing. Counts are raised to 0.75 (tempered Hellinger: one huge bin, such as
// a sky, must not drown the rest) and every block is mean-centred before normalising, so that two
// unrelated images do not look alike merely because all histograms are positive; this roughly
// doubled the margin between a near-duplicate and the best unrelated photo in our tests.
constexpr float kHistogramPower = 0.75f;

struct SoftBin {
  int lo;
  int hi;
  float w_hi;  // weight of hi; lo gets 1 - w_hi
};

// Linear interpolation between the centres of `cells` equal bins over [0,1]; clamps at the ends.
inline SoftBin soft_bin(float pos01, int cells) {
  const float p = pos01 * static_cast<float>(cells) - 0.5f;
  if (p <= 0.f) return {0, 0, 0.f};
  if (p >= static_cast<float>(cells - 1)) return {cells - 1, cells - 1, 0.f};
  const int lo = static_cast<int>(p);
  return {lo, lo + 1, p - static_cast<float>(lo)};
}

// The same on a circle (hue, orientation): pos01 in [0,1).
inline SoftBin soft_bin_circular(float pos01, int cells) {
  float p = pos01 * static_cast<float>(cells) - 0.5f;
  if (p < 0.f) p += static_cast<float>(cells);
  int lo = std::min(static_cast<int>(p), cells - 1);
  const float f = p - static_cast<float>(lo);
  return {lo, (lo + 1) % cells, f};
}

// atan2(y, x) / pi for y >= 0, in [0, 1]; max error about 0.0012 (0.2 degree), far below a bin.
inline float half_turn_atan2(float y, float x) {
  const float ax = std::abs(x);
  if (ax < 1e-12f && y < 1e-12f) return 0.f;
  float angle;  // atan of the smaller ratio, in units of pi
  if (ax >= y) {
    const float z = y / ax;
    angle = z * (0.25f + 0.0869f * (1.f - z));  // ~ atan(z) / pi
  } else {
    const float z = ax / y;
    angle = 0.5f - z * (0.25f + 0.0869f * (1.f - z));
  }
  return x < 0.f ? 1.f - angle : angle;
}

// Spreads sub-cell histograms (sub x sub, `bins` each) over cells x cells with bilinear weights.
void spread_sub_cells(const std::vector<float>& sub, int sub_grid, int cells, int bins,
                      std::span<float> out) {
  for (int sy = 0; sy < sub_grid; ++sy) {
    const SoftBin by = soft_bin((static_cast<float>(sy) + 0.5f) / static_cast<float>(sub_grid), cells);
    for (int sx = 0; sx < sub_grid; ++sx) {
      const SoftBin bx = soft_bin((static_cast<float>(sx) + 0.5f) / static_cast<float>(sub_grid), cells);
      const float* h = sub.data() + static_cast<size_t>(sy * sub_grid + sx) * static_cast<size_t>(bins);
      const std::array<std::pair<int, float>, 2> ys = {{{by.lo, 1.f - by.w_hi}, {by.hi, by.w_hi}}};
      const std::array<std::pair<int, float>, 2> xs = {{{bx.lo, 1.f - bx.w_hi}, {bx.hi, bx.w_hi}}};
      for (const auto& [cy, wy] : ys) {
        for (const auto& [cx, wx] : xs) {
          const float w = wy * wx;
          if (w == 0.f) continue;
          float* cell = out.data() + static_cast<size_t>(cy * cells + cx) * static_cast<size_t>(bins);
          for (int k = 0; k < bins; ++k) cell[k] += w * h[k];
        }
      }
    }
  }
}

// Raw (un-normalised) blocks: histograms of counts, grid means and deviations.
struct RawBlocks {
  std::span<float> colour;
  std::span<float> layout;
  std::span<float> edges;
};

RawBlocks split(std::span<float> out) {
  return {out.subspan(0, kColourDims), out.subspan(kColourDims, kLayoutDims),
          out.subspan(kColourDims + kLayoutDims, kEdgeDims)};
}

void centre_in_place(std::span<float> v) {
  float mean = 0.f;
  for (float x : v) mean += x;
  mean /= static_cast<float>(v.size());
  for (float& x : v) x -= mean;
}

// Adds one pixel's colour to a 52-bin histogram: hue on a circle, chroma (max - min: unlike HSV
// saturation it does not blow up in dark, noisy pixels) and value (max), all softly binned;
// near-grey pixels go to the grey levels instead, with a smooth hand-over.
inline void add_colour(float r, float g, float b, float* hist) {
  const float vmax = std::max(r, std::max(g, b));
  const float vmin = std::min(r, std::min(g, b));
  const float chroma = vmax - vmin;
  // Below ~0.05 chroma the hue is noise (grey); above ~0.2 the pixel is a colour.
  const float chromatic = std::clamp((chroma - 0.05f) * (1.f / 0.15f), 0.f, 1.f);
  const float value = std::min(vmax, 0.99999f);
  if (chromatic > 0.f) {
    float hue;  // [0, 6)
    const float inv = 1.f / chroma;
    if (vmax == r) {
      hue = (g - b) * inv;
      if (hue < 0.f) hue += 6.f;
    } else if (vmax == g) {
      hue = (b - r) * inv + 2.f;
    } else {
      hue = (r - g) * inv + 4.f;
    }
    const SoftBin hb = soft_bin_circular(std::min(hue * (1.f / 6.f), 0.99999f), kHueBins);
    const SoftBin cb = soft_bin(std::min(chroma, 0.99999f), kChromaBins);
    const SoftBin vb = soft_bin(value, kValueBins);
    const float w_h[2] = {chromatic * (1.f - hb.w_hi), chromatic * hb.w_hi};
    const int i_h[2] = {hb.lo, hb.hi};
    const float w_c[2] = {1.f - cb.w_hi, cb.w_hi};
    const int i_c[2] = {cb.lo, cb.hi};
    const float w_v[2] = {1.f - vb.w_hi, vb.w_hi};
    const int i_v[2] = {vb.lo, vb.hi};
    for (int a = 0; a < 2; ++a) {
      for (int c = 0; c < 2; ++c) {
        float* row = hist + (i_h[a] * kChromaBins + i_c[c]) * kValueBins;
        const float hc = w_h[a] * w_c[c];
        row[i_v[0]] += hc * w_v[0];
        row[i_v[1]] += hc * w_v[1];
      }
    }
  }
  if (chromatic < 1.f) {
    const SoftBin gb = soft_bin(value, kGreyBins);
    const float grey = 1.f - chromatic;
    hist[kChromaticBins + gb.lo] += grey * (1.f - gb.w_hi);
    hist[kChromaticBins + gb.hi] += grey * gb.w_hi;
  }
}

void compute_raw_blocks(const DecodedImage& image, std::span<float> out) {
  const int w = image.width;
  const int h = image.height;
  std::fill(out.begin(), out.end(), 0.f);
  const RawBlocks blocks = split(out);

  // Sub-cell index of every column and row, for each grid.
  auto sub_index = [](int size, int grid) {
    std::vector<int> idx(static_cast<size_t>(size));
    for (int i = 0; i < size; ++i) idx[static_cast<size_t>(i)] = i * grid / size;
    return idx;
  };
  const std::vector<int> colour_x = sub_index(w, kColourSubGrid);
  const std::vector<int> colour_y = sub_index(h, kColourSubGrid);
  const std::vector<int> luma_x = sub_index(w, kLumaGrid);
  const std::vector<int> luma_y = sub_index(h, kLumaGrid);
  const std::vector<int> coarse_x = sub_index(w, kCoarseGrid);
  const std::vector<int> coarse_y = sub_index(h, kCoarseGrid);
  const std::vector<int> edge_x = sub_index(w, kEdgeSubGrid);
  const std::vector<int> edge_y = sub_index(h, kEdgeSubGrid);

  // Pass 1, every pixel: the luma plane and the layout sums.
  std::array<float, kLumaGrid * kLumaGrid> luma_sum{};
  std::array<float, kLumaGrid * kLumaGrid> luma_count{};
  std::array<float, kCoarseGrid * kCoarseGrid> cb_sum{};
  std::array<float, kCoarseGrid * kCoarseGrid> cr_sum{};
  std::array<float, kCoarseGrid * kCoarseGrid> lumac_sum{};
  std::array<float, kCoarseGrid * kCoarseGrid> luma2_sum{};
  std::array<float, kCoarseGrid * kCoarseGrid> coarse_count{};
  std::vector<float> luma(static_cast<size_t>(w) * static_cast<size_t>(h));
  const uint8_t* px = image.rgb.data();
  float* lp = luma.data();
  for (int y = 0; y < h; ++y) {
    const int ly = luma_y[static_cast<size_t>(y)] * kLumaGrid;
    const int cy = coarse_y[static_cast<size_t>(y)] * kCoarseGrid;
    for (int x = 0; x < w; ++x, px += 3, ++lp) {
      const float r = static_cast<float>(px[0]) * (1.f / 255.f);
      const float g = static_cast<float>(px[1]) * (1.f / 255.f);
      const float b = static_cast<float>(px[2]) * (1.f / 255.f);
      const float yv = 0.299f * r + 0.587f * g + 0.114f * b;
      *lp = yv;
      const size_t li = static_cast<size_t>(ly + luma_x[static_cast<size_t>(x)]);
      luma_sum[li] += yv;
      luma_count[li] += 1.f;
      const size_t ci = static_cast<size_t>(cy + coarse_x[static_cast<size_t>(x)]);
      cb_sum[ci] += -0.168736f * r - 0.331264f * g + 0.5f * b;
      cr_sum[ci] += 0.5f * r - 0.418688f * g - 0.081312f * b;
      lumac_sum[ci] += yv;
      luma2_sum[ci] += yv * yv;
      coarse_count[ci] += 1.f;
    }
  }

  // Pass 2, 2x2 pixel blocks (averaged): colour histograms. A colour histogram needs no more
  // than a quarter of the pixels, and averaging steadies it against resampling and JPEG noise.
  std::vector<float> colour_sub(static_cast<size_t>(kColourSubGrid * kColourSubGrid * kColourCellBins));
  const size_t row_bytes = static_cast<size_t>(w) * 3;
  for (int y = 0; y < h; y += 2) {
    const uint8_t* row0 = image.rgb.data() + static_cast<size_t>(y) * row_bytes;
    const uint8_t* row1 = y + 1 < h ? row0 + row_bytes : row0;
    float* sub_row = colour_sub.data() +
                     static_cast<size_t>(colour_y[static_cast<size_t>(y)] * kColourSubGrid) * kColourCellBins;
    for (int x = 0; x < w; x += 2) {
      const size_t a = static_cast<size_t>(x) * 3;
      const size_t c = x + 1 < w ? a + 3 : a;
      const float k = 1.f / (4.f * 255.f);
      const float r = static_cast<float>(row0[a] + row0[c] + row1[a] + row1[c]) * k;
      const float g = static_cast<float>(row0[a + 1] + row0[c + 1] + row1[a + 1] + row1[c + 1]) * k;
      const float b = static_cast<float>(row0[a + 2] + row0[c + 2] + row1[a + 2] + row1[c + 2]) * k;
      add_colour(r, g, b, sub_row + static_cast<size_t>(colour_x[static_cast<size_t>(x)]) * kColourCellBins);
    }
  }
  spread_sub_cells(colour_sub, kColourSubGrid, kColourGrid, kColourCellBins, blocks.colour);

  // Layout: where light, colour and texture are. Luma means are centred (brightness is the
  // colour block's business); chroma means are already centred on grey.
  std::span<float> layout = blocks.layout;
  float luma_mean = 0.f;
  for (size_t i = 0; i < luma_sum.size(); ++i) {
    layout[i] = luma_sum[i] / std::max(luma_count[i], 1.f);
    luma_mean += layout[i];
  }
  luma_mean /= static_cast<float>(luma_sum.size());
  for (size_t i = 0; i < luma_sum.size(); ++i) layout[i] -= luma_mean;
  const size_t n_coarse = coarse_count.size();
  for (size_t i = 0; i < n_coarse; ++i) {
    const float count = std::max(coarse_count[i], 1.f);
    const float mean = lumac_sum[i] / count;
    layout[luma_sum.size() + i] = cb_sum[i] / count;
    layout[luma_sum.size() + n_coarse + i] = cr_sum[i] / count;
    layout[luma_sum.size() + 2 * n_coarse + i] = std::sqrt(std::max(luma2_sum[i] / count - mean * mean, 0.f));
  }
  // Texture deviations are centred too: what matters is where the busy parts are.
  centre_in_place(layout.subspan(luma_sum.size() + 2 * n_coarse, n_coarse));

  // Edges: gradient-magnitude weighted, unsigned orientation histograms of luma.
  std::vector<float> edge_sub(static_cast<size_t>(kEdgeSubGrid * kEdgeSubGrid * kOrientationBins));
  const size_t stride = static_cast<size_t>(w);
  for (int y = 1; y < h - 1; ++y) {
    const float* row = luma.data() + static_cast<size_t>(y) * stride;
    const int sy = edge_y[static_cast<size_t>(y)];
    for (int x = 1; x < w - 1; ++x) {
      float gx = row[x + 1] - row[x - 1];
      float gy = row[static_cast<ptrdiff_t>(x) + static_cast<ptrdiff_t>(stride)] -
                 row[static_cast<ptrdiff_t>(x) - static_cast<ptrdiff_t>(stride)];
      const float magnitude = std::sqrt(gx * gx + gy * gy);
      if (magnitude < 1e-3f) continue;
      if (gy < 0.f) {  // unsigned orientation: fold onto the upper half-plane
        gx = -gx;
        gy = -gy;
      }
      const SoftBin ob =
          soft_bin_circular(std::min(half_turn_atan2(gy, gx), 0.99999f), kOrientationBins);
      float* hist = edge_sub.data() +
                    static_cast<size_t>(sy * kEdgeSubGrid + edge_x[static_cast<size_t>(x)]) *
                        kOrientationBins;
      hist[ob.lo] += magnitude * (1.f - ob.w_hi);
      hist[ob.hi] += magnitude * ob.w_hi;
    }
  }
  spread_sub_cells(edge_sub, kEdgeSubGrid, kEdgeGrid, kOrientationBins, blocks.edges);
}

void power_in_place(std::span<float> v, float power) {
  for (float& x : v) x = std::pow(std::max(x, 0.f), power);
}


// Normalises a block to unit length and scales it by weight. A block whose norm is below min_norm
// is flat (no edges in a blank image, no layout in a uniform one) and becomes zero: normalising it
// would blow rounding noise up to a full third of the vector.
void finish_block(std::span<float> v, float weight, float min_norm) {
  double sum = 0.0;
  for (float x : v) sum += static_cast<double>(x) * x;
  if (std::sqrt(sum) < min_norm) {
    std::fill(v.begin(), v.end(), 0.f);
    return;
  }
  l2_normalize(v);
  for (float& x : v) x *= weight;
}

void finish_blocks(std::span<float> out) {
  const RawBlocks blocks = split(out);
  power_in_place(blocks.colour, kHistogramPower);
  power_in_place(blocks.edges, kHistogramPower);
  centre_in_place(blocks.colour);
  centre_in_place(blocks.edges);
  // Equal shares of the squared norm: the cosine is the mean of the three blocks' cosines.
  const float weight = std::sqrt(1.f / 3.f);
  // Thresholds: histogram counts are in (powered) pixels, layout values in luma units (1e-3 is a
  // quarter of a grey level).
  finish_block(blocks.colour, weight, 1e-3f);
  finish_block(blocks.layout, weight, 1e-3f);
  finish_block(blocks.edges, weight, 1e-3f);
  l2_normalize(out);  // exact unit length even when a block was flat
}

class BuiltinDescriptor final : public Extractor {
 public:
  explicit BuiltinDescriptor(const BuiltinDescriptorOptions& options) {
    info_.name = "builtin";
    info_.version = "1.0";
    info_.dimension = kBuiltinDescriptorDimension;
    info_.input_width = options.input_size;
    info_.input_height = options.input_size;
    info_.normalize = true;
  }

  const ModelInfo& info() const override { return info_; }

  Result<std::vector<std::vector<float>>> extract(std::span<const ExtractorInput> batch) override {
    std::vector<std::vector<float>> out;
    out.reserve(batch.size());
    for (size_t i = 0; i < batch.size(); ++i) {
      const ExtractorInput& input = batch[i];
      auto fail = [&](const std::string& message) {
        return Error(ErrorCode::kInvalidArgument,
                     "builtin: input " + std::to_string(i) + ": " + message)
            .with("index", std::to_string(i))
            .with("image_id", std::string(input.image_id))
            .with("model", info_.name);
      };
      if (input.pixels == nullptr) return fail("no decoded pixels (builtin needs pixels)");
      const DecodedImage& image = *input.pixels;
      if (image.width != info_.input_width || image.height != info_.input_height) {
        return fail("pixels are " + std::to_string(image.width) + "x" +
                    std::to_string(image.height) + ", the model wants " +
                    std::to_string(info_.input_width) + "x" + std::to_string(info_.input_height));
      }
      std::vector<float> v(static_cast<size_t>(info_.dimension));
      if (Status s = compute_builtin_descriptor(image, v); !s.ok()) return fail(s.error().message);
      out.push_back(std::move(v));
    }
    return out;
  }

 private:
  ModelInfo info_;
};

}  // namespace

Status compute_builtin_descriptor(const DecodedImage& image, std::span<float> out) {
  const int w = image.width;
  const int h = image.height;
  if (w < kMinInput || h < kMinInput) {
    return Error(ErrorCode::kInvalidArgument,
                 "image is " + std::to_string(w) + "x" + std::to_string(h) + ", at least " +
                     std::to_string(kMinInput) + "x" + std::to_string(kMinInput) + " needed");
  }
  if (image.rgb.size() != static_cast<size_t>(w) * static_cast<size_t>(h) * 3) {
    return Error(ErrorCode::kInvalidArgument,
                 "pixel buffer holds " + std::to_string(image.rgb.size()) + " bytes, " +
                     std::to_string(w) + "x" + std::to_string(h) + "x3 expected");
  }
  if (out.size() != static_cast<size_t>(kBuiltinDescriptorDimension)) {
    return Error(ErrorCode::kInvalidArgument,
                 "output span holds " + std::to_string(out.size()) + " floats, " +
                     std::to_string(kBuiltinDescriptorDimension) + " needed");
  }
  compute_raw_blocks(image, out);
  finish_blocks(out);
  return ok_status();
}

std::unique_ptr<Extractor> make_builtin_descriptor(const BuiltinDescriptorOptions& options) {
  return std::make_unique<BuiltinDescriptor>(options);
}

}  // namespace deeplens
