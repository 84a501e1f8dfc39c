// The imaging gate on crafted hostile bytes and on small images generated with libvips: every bad
// input gets its own reason and nothing crashes or allocates for pixels it refuses; good inputs
// probe, decode and thumbnail as the header promises.
#include "imaging/image.h"

#include <vips/vips8>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

// Under ASan: libx265, the HEVC encoder libheif uses when these tests write HEIC samples, leaks
// two small buffers per process (DeepLens itself never encodes HEIC). Nothing else is excused.
extern "C" const char* __lsan_default_suppressions() { return "leak:libx265.so\n"; }

namespace deeplens {
namespace {

using vips::VImage;
namespace fs = std::filesystem;

std::vector<uint8_t> bytes(std::string_view s) { return {s.begin(), s.end()}; }

// ---- crafted PNGs -------------------------------------------------------------------------------

uint32_t crc32(const uint8_t* data, size_t n) {
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) {
    crc ^= data[i];
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

void put_be32(std::vector<uint8_t>& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(v >> shift));
}

void put_chunk(std::vector<uint8_t>& out, std::string_view type, const std::vector<uint8_t>& data) {
  put_be32(out, static_cast<uint32_t>(data.size()));
  const size_t start = out.size();
  out.insert(out.end(), type.begin(), type.end());
  out.insert(out.end(), data.begin(), data.end());
  put_be32(out, crc32(out.data() + start, out.size() - start));
}

// Signature + a valid IHDR (8-bit RGB) with correct CRC + a tiny IDAT + IEND: everything a
// header reader needs to believe the declared size, and nothing close to the pixels.
std::vector<uint8_t> png_declaring(uint32_t width, uint32_t height) {
  std::vector<uint8_t> png = bytes("\x89PNG\r\n\x1A\n");
  std::vector<uint8_t> ihdr;
  put_be32(ihdr, width);
  put_be32(ihdr, height);
  ihdr.insert(ihdr.end(), {8, 2, 0, 0, 0});  // depth 8, colour type RGB, deflate, filter 0, no interlace
  put_chunk(png, "IHDR", ihdr);
  put_chunk(png, "IDAT", {0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01});
  put_chunk(png, "IEND", {});
  return png;
}

// ---- generated images ---------------------------------------------------------------------------

// Smooth colour ramps: red grows to the right, green downwards.
VImage gradient(int width, int height) {
  VImage xy = VImage::xyz(width, height);
  VImage r = xy[0] * (255.0 / width);
  VImage g = xy[1] * (255.0 / height);
  VImage b = r * 0 + 128;
  return r.bandjoin(g).bandjoin(b).cast(VIPS_FORMAT_UCHAR).copy(
      VImage::option()->set("interpretation", VIPS_INTERPRETATION_sRGB));
}

// Four flat quadrants (red, green / blue, white) so orientation is easy to read back.
VImage quadrants(int width, int height) {
  VImage xy = VImage::xyz(width, height);
  VImage right = xy[0] >= width / 2;
  VImage bottom = xy[1] >= height / 2;
  auto colour = [&](double r, double g, double b) {
    return VImage::black(width, height).new_from_image({r, g, b});
  };
  VImage top_row = right.ifthenelse(colour(0, 200, 0), colour(220, 0, 0));
  VImage bottom_row = right.ifthenelse(colour(255, 255, 255), colour(0, 0, 220));
  return bottom.ifthenelse(bottom_row, top_row).cast(VIPS_FORMAT_UCHAR).copy(
      VImage::option()->set("interpretation", VIPS_INTERPRETATION_sRGB));
}

std::vector<uint8_t> encode(const VImage& image, const char* suffix, vips::VOption* options = nullptr) {
  void* buf = nullptr;
  size_t len = 0;
  image.write_to_buffer(suffix, &buf, &len, options);
  std::vector<uint8_t> out(static_cast<uint8_t*>(buf), static_cast<uint8_t*>(buf) + len);
  g_free(buf);
  return out;
}

VImage load(const std::vector<uint8_t>& encoded) {
  return VImage::new_from_buffer(encoded.data(), encoded.size(), "");
}

bool can_encode(const char* suffix) {
  try {
    encode(gradient(16, 16), suffix);
    return true;
  } catch (const vips::VError&) {
    return false;
  }
}

std::array<int, 3> pixel(const DecodedImage& image, int x, int y) {
  const size_t i = (static_cast<size_t>(y) * static_cast<size_t>(image.width) + static_cast<size_t>(x)) * 3;
  return {image.rgb[i], image.rgb[i + 1], image.rgb[i + 2]};
}

void expect_colour_near(std::array<int, 3> got, std::array<int, 3> want, int tolerance,
                        const std::string& where) {
  for (int c = 0; c < 3; ++c) {
    EXPECT_NEAR(got[static_cast<size_t>(c)], want[static_cast<size_t>(c)], tolerance)
        << where << " channel " << c;
  }
}

std::string reason_of(const Error& e) {
  auto it = e.context.find("reason");
  return it == e.context.end() ? "<none>" : it->second;
}

class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "deeplens-imaging-XXXXXX").string();
    path_ = mkdtemp(pattern.data());
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }
  fs::path write(const std::string& name, const std::vector<uint8_t>& data) const {
    fs::path p = path_ / name;
    std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(data.data()),
                                             static_cast<std::streamsize>(data.size()));
    return p;
  }

 private:
  fs::path path_;
};

class ImagingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ASSERT_TRUE(init_imaging().ok()); }

  // The reason every entry point gives for the same bad bytes: they share one gate.
  static void expect_refused(const std::vector<uint8_t>& data, const std::string& reason,
                             ErrorCode code, const ImageLimits& limits = {}) {
    auto probed = probe_buffer(data, limits);
    ASSERT_FALSE(probed.ok()) << "probe accepted bytes that should be " << reason;
    EXPECT_EQ(reason_of(probed.error()), reason) << probed.error().to_string();
    EXPECT_EQ(probed.error().code, code) << probed.error().to_string();
    EXPECT_FALSE(probed.error().message.empty());

    auto decoded = decode_for_model(data, 224, 224, limits);
    ASSERT_FALSE(decoded.ok());
    EXPECT_EQ(reason_of(decoded.error()), reason) << decoded.error().to_string();

    auto thumb = make_thumbnail(data, 256, ThumbnailFormat::kJpeg, limits);
    ASSERT_FALSE(thumb.ok());
    EXPECT_EQ(reason_of(thumb.error()), reason) << thumb.error().to_string();
  }
};

// ---- initialisation -------------------------------------------------------------------------------

TEST_F(ImagingTest, InitIsIdempotentAndListsTheFormatsThisBuildReads) {
  EXPECT_TRUE(init_imaging().ok());
  EXPECT_TRUE(init_imaging(ImagingOptions{.cache_max_operations = 100}).ok());
  const std::vector<std::string> formats = supported_formats();
  for (const char* f : {"JPEG", "PNG", "WEBP", "GIF", "TIFF"}) {
    EXPECT_NE(std::find(formats.begin(), formats.end(), f), formats.end()) << f;
  }
}

TEST_F(ImagingTest, LoadersOutsideTheAcceptedFormatsAreBlockedProcessWide) {
  // The second wall: even code that asks libvips to sniff and load by itself cannot reach the
  // SVG (or PDF, ImageMagick, CSV, matrix ...) loaders.
  const auto svg = bytes("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" height=\"10\"/>");
  EXPECT_THROW(VImage::new_from_buffer(svg.data(), svg.size(), "").avg(), vips::VError);
  const auto csv = bytes("1,2,3\n4,5,6\n");
  EXPECT_THROW(VImage::new_from_buffer(csv.data(), csv.size(), "").avg(), vips::VError);
}

// ---- probe --------------------------------------------------------------------------------------

TEST_F(ImagingTest, ProbeReportsFormatSizeAndColourOfEveryAcceptedFormat) {
  struct Case {
    const char* suffix;
    const char* format;
    const char* content_type;
    const char* extension;
  };
  std::vector<Case> cases = {
      {".jpg", "JPEG", "image/jpeg", "jpg"}, {".png", "PNG", "image/png", "png"},
      {".webp", "WEBP", "image/webp", "webp"}, {".gif", "GIF", "image/gif", "gif"},
      {".tif", "TIFF", "image/tiff", "tiff"},
  };
  if (can_encode(".heic")) cases.push_back({".heic", "HEIF", "image/heif", "heif"});
  if (can_encode(".avif")) cases.push_back({".avif", "AVIF", "image/avif", "avif"});
  const VImage source = gradient(300, 200);
  for (const Case& c : cases) {
    const std::vector<uint8_t> data = encode(source, c.suffix);
    auto info = probe_buffer(data, {});
    ASSERT_TRUE(info.ok()) << c.suffix << ": " << info.error().to_string();
    EXPECT_EQ(info->format, c.format);
    EXPECT_EQ(info->content_type, c.content_type);
    EXPECT_EQ(info->extension, c.extension);
    EXPECT_EQ(info->width, 300) << c.suffix;
    EXPECT_EQ(info->height, 200) << c.suffix;
    EXPECT_EQ(info->color_profile, "srgb") << c.suffix;
    EXPECT_EQ(info->orientation, 1) << c.suffix;
  }
}

TEST_F(ImagingTest, ProbeReportsGreyCmykSixteenBitAlphaAndOrientation) {
  const VImage source = gradient(120, 80);
  auto grey = probe_buffer(encode(source.colourspace(VIPS_INTERPRETATION_B_W), ".jpg"), {});
  ASSERT_TRUE(grey.ok());
  EXPECT_EQ(grey->color_profile, "b-w");

  auto cmyk = probe_buffer(
      encode(source.icc_export(VImage::option()->set("output_profile", "cmyk")), ".jpg"), {});
  ASSERT_TRUE(cmyk.ok());
  EXPECT_EQ(cmyk->color_profile, "cmyk");

  auto deep = probe_buffer(encode(source.colourspace(VIPS_INTERPRETATION_RGB16), ".png"), {});
  ASSERT_TRUE(deep.ok());
  EXPECT_EQ(deep->color_profile, "rgb16");

  VImage with_alpha = source.bandjoin(source[0]);  // alpha ramps with x
  auto alpha = probe_buffer(encode(with_alpha, ".png"), {});
  ASSERT_TRUE(alpha.ok());
  EXPECT_TRUE(alpha->has_alpha);
  auto opaque = probe_buffer(encode(source, ".png"), {});
  ASSERT_TRUE(opaque.ok());
  EXPECT_FALSE(opaque->has_alpha);

  VImage oriented = source.copy();
  oriented.set("orientation", 6);
  auto rotated = probe_buffer(encode(oriented, ".jpg"), {});
  ASSERT_TRUE(rotated.ok());
  EXPECT_EQ(rotated->orientation, 6);
  EXPECT_EQ(rotated->width, 120);  // as stored, before rotation
  EXPECT_EQ(rotated->height, 80);
}

TEST_F(ImagingTest, ProbeFileReadsByContentNotByName) {
  TempDir dir;
  const fs::path misnamed = dir.write("really_a_png.jpg", encode(gradient(40, 30), ".png"));
  auto info = probe_file(misnamed, {});
  ASSERT_TRUE(info.ok()) << info.error().to_string();
  EXPECT_EQ(info->format, "PNG");
  EXPECT_EQ(info->extension, "png");
  EXPECT_EQ(info->width, 40);

  const fs::path text = dir.write("holiday.jpg", bytes("this is not a photo, it is a text file\n"));
  auto r = probe_file(text, {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(reason_of(r.error()), "not_an_image");
  EXPECT_EQ(r.error().context.at("path"), text.string());
}

TEST_F(ImagingTest, ProbeFileRefusesOversizedFilesBeforeReadingThem) {
  TempDir dir;
  const fs::path big = dir.path() / "big.jpg";
  std::ofstream(big).put('\xFF');
  fs::resize_file(big, 60u * 1024 * 1024);  // sparse: 60 MB that were never written
  auto r = probe_file(big, {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(reason_of(r.error()), "too_large");
  EXPECT_EQ(r.error().code, ErrorCode::kResourceExhausted);
  EXPECT_EQ(r.error().context.at("max_bytes"), std::to_string(50 * 1024 * 1024));

  const fs::path empty = dir.write("empty.png", {});
  auto e = probe_file(empty, {});
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(reason_of(e.error()), "empty");
}

TEST_F(ImagingTest, ProbeFileReportsMissingAndUnreadablePaths) {
  TempDir dir;
  auto missing = probe_file(dir.path() / "nope.jpg", {});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ErrorCode::kNotFound);
  EXPECT_EQ(missing.error().context.at("path"), (dir.path() / "nope.jpg").string());
  auto directory = probe_file(dir.path(), {});
  ASSERT_FALSE(directory.ok());
  EXPECT_EQ(directory.error().code, ErrorCode::kIoError);
}

// ---- hostile inputs -----------------------------------------------------------------------------

TEST_F(ImagingTest, RefusesZeroBytesAsEmpty) {
  expect_refused({}, "empty", ErrorCode::kInvalidArgument);
}

TEST_F(ImagingTest, RefusesTextAndOtherNonImagesAsNotAnImage) {
  expect_refused(bytes("GET / HTTP/1.1\r\nHost: example\r\n\r\n"), "not_an_image",
                 ErrorCode::kInvalidArgument);
  expect_refused(bytes("{\"image\": \"cat.jpg\"}"), "not_an_image", ErrorCode::kInvalidArgument);
  // CSV and matrix text that libvips itself would happily load.
  expect_refused(bytes("1 2 3\n4 5 6\n"), "not_an_image", ErrorCode::kInvalidArgument);
}

TEST_F(ImagingTest, RefusesRealImageFormatsWeDoNotAcceptAsUnsupported) {
  // A genuine 2x1 24-bit BMP.
  std::vector<uint8_t> bmp = bytes("BM");
  auto le32 = [&](uint32_t v) {
    for (int i = 0; i < 4; ++i) bmp.push_back(static_cast<uint8_t>(v >> (8 * i)));
  };
  le32(14 + 40 + 8);
  le32(0);
  le32(14 + 40);
  le32(40);
  le32(2);
  le32(1);
  bmp.insert(bmp.end(), {1, 0, 24, 0});
  for (int i = 0; i < 6; ++i) le32(0);
  bmp.insert(bmp.end(), {0, 0, 255, 255, 0, 0, 0, 0});
  expect_refused(bmp, "unsupported_format", ErrorCode::kInvalidArgument);
  auto r = probe_buffer(bmp, {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().context.at("detected"), "BMP");

  expect_refused(bytes("<?xml version=\"1.0\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" "
                       "width=\"100000\" height=\"100000\"><rect width=\"1\" height=\"1\"/></svg>"),
                 "unsupported_format", ErrorCode::kInvalidArgument);
  expect_refused(bytes("%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"), "unsupported_format",
                 ErrorCode::kInvalidArgument);
}

TEST_F(ImagingTest, RefusesADecompressionBombFromItsHeader) {
  // 100000 x 100000 RGB would be 30 GB of pixels; the header alone must be enough to say no
  // (and under ASan an attempt to allocate it would abort the test).
  const std::vector<uint8_t> bomb = png_declaring(100000, 100000);
  expect_refused(bomb, "too_many_pixels", ErrorCode::kResourceExhausted);
  auto r = probe_buffer(bomb, {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().context.at("width"), "100000");
  EXPECT_EQ(r.error().context.at("height"), "100000");
  // Dimensions libpng itself would reject (beyond its user limits) get the same answer.
  expect_refused(png_declaring(0x7FFFFFFF, 0x7FFFFFFF), "too_many_pixels",
                 ErrorCode::kResourceExhausted);
}

// Found by tests/fuzz (fuzz_sniff): sides of 2^32-1, the largest a PNG header can declare,
// overflowed the signed 64-bit pixel count (undefined behaviour; in practice a negative count
// that passed the pixel limit, leaving only the edge limit to refuse the image).
TEST_F(ImagingTest, RefusesTheLargestSizeAPngCanDeclareAsTooManyPixels) {
  expect_refused(png_declaring(0xFFFFFFFF, 0xFFFFFFFF), "too_many_pixels", ErrorCode::kResourceExhausted);
  auto r = probe_buffer(png_declaring(0xFFFFFFFF, 0xFFFFFFFF), {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().context.at("width"), "4294967295");
  EXPECT_NE(r.error().message.find("18446744065119617025 pixels"), std::string::npos) << r.error().message;
}

// Found by tests/fuzz (fuzz_sniff, out of memory): libpng allocates and zeroes the length a chunk
// declares before reading it, so a 300-byte PNG declaring a 2 GB tEXt chunk cost 2 GB per probe.
// The chunk walk now refuses it before libpng sees the bytes (its message, not libpng's, says so).
TEST_F(ImagingTest, RefusesAPngChunkLongerThanTheFileBeforeLibpngReadsIt) {
  std::vector<uint8_t> png = png_declaring(10, 10);
  std::vector<uint8_t> text_chunk = {0x7F, 0x00, 0x00, 0x00, 't', 'E', 'X', 't', 'k', 0, 'v'};
  png.insert(png.begin() + 33, text_chunk.begin(), text_chunk.end());  // after the IHDR chunk
  expect_refused(png, "corrupt", ErrorCode::kInvalidArgument);
  auto r = probe_buffer(png, {});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("before its IEND chunk"), std::string::npos) << r.error().message;
}

TEST_F(ImagingTest, RefusesAnOverlongEdgeEvenWithFewPixels) {
  expect_refused(png_declaring(40000, 10), "edge_too_long", ErrorCode::kResourceExhausted);
  // Through libvips' header too (not just the PNG pre-check): a JPEG wider than the limit.
  ImageLimits limits;
  limits.max_edge = 100;
  expect_refused(encode(gradient(150, 20), ".jpg"), "edge_too_long", ErrorCode::kResourceExhausted,
                 limits);
  limits = {};
  limits.max_pixels = 1000;
  expect_refused(encode(gradient(50, 50), ".webp"), "too_many_pixels", ErrorCode::kResourceExhausted,
                 limits);
}

TEST_F(ImagingTest, RefusesMoreBytesThanTheLimitAsTooLarge) {
  ImageLimits limits;
  const std::vector<uint8_t> jpeg = encode(gradient(64, 64), ".jpg");
  limits.max_bytes = static_cast<int64_t>(jpeg.size()) - 1;
  expect_refused(jpeg, "too_large", ErrorCode::kResourceExhausted, limits);
  limits.max_bytes = static_cast<int64_t>(jpeg.size());
  EXPECT_TRUE(probe_buffer(jpeg, limits).ok());
}

TEST_F(ImagingTest, RefusesTruncatedImagesAsCorrupt) {
  const VImage source = gradient(256, 256);
  for (const char* suffix : {".jpg", ".png", ".webp"}) {
    std::vector<uint8_t> data = encode(source, suffix);
    data.resize(data.size() * 2 / 3);
    SCOPED_TRACE(suffix);
    expect_refused(data, "corrupt", ErrorCode::kInvalidArgument);
  }
  // Cut inside the header.
  std::vector<uint8_t> jpeg = encode(source, ".jpg");
  jpeg.resize(300);
  expect_refused(jpeg, "corrupt", ErrorCode::kInvalidArgument);
}

TEST_F(ImagingTest, FailsADamagedPixelStreamInsteadOfGreyFillingIt) {
  // Structure intact (every chunk present, IEND reached) and the header fine, but the compressed
  // pixel data is garbage: only decoding can tell, and it must say so.
  std::vector<uint8_t> png = encode(gradient(200, 200), ".png", VImage::option()->set("compression", 1));
  auto idat = std::search(png.begin(), png.end(), std::begin("IDAT"), std::end("IDAT") - 1);
  ASSERT_NE(idat, png.end());
  for (auto it = idat + 20; it < idat + 400 && it < png.end() - 20; ++it) *it = static_cast<uint8_t>(*it ^ 0x5A);
  auto probed = probe_buffer(png, {});
  EXPECT_TRUE(probed.ok()) << "the header is fine; probe reads no pixels";
  auto decoded = decode_for_model(png, 64, 64, {});
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(reason_of(decoded.error()), "corrupt") << decoded.error().to_string();
  auto thumb = make_thumbnail(png, 64, ThumbnailFormat::kWebp, {});
  ASSERT_FALSE(thumb.ok());
  EXPECT_EQ(reason_of(thumb.error()), "corrupt");
}

TEST_F(ImagingTest, RefusesAMangledSignatureAsCorrupt) {
  std::vector<uint8_t> png = encode(gradient(20, 20), ".png");
  png.erase(png.begin() + 4);  // "\r\n" -> "\n", as a text-mode transfer would
  expect_refused(png, "corrupt", ErrorCode::kInvalidArgument);
}

// ---- decode_for_model ---------------------------------------------------------------------------

TEST_F(ImagingTest, DecodesToExactlyTheRequestedSizeWhateverTheSource) {
  const std::vector<std::vector<uint8_t>> sources = {
      encode(gradient(640, 480), ".jpg"), encode(gradient(480, 640), ".png"),
      encode(gradient(1000, 100), ".webp"), encode(gradient(20, 10), ".gif"),
      encode(gradient(300, 300).colourspace(VIPS_INTERPRETATION_B_W), ".jpg"),
      encode(gradient(300, 200).colourspace(VIPS_INTERPRETATION_RGB16), ".png"),
      encode(gradient(300, 200).icc_export(VImage::option()->set("output_profile", "cmyk")), ".jpg"),
      encode(gradient(333, 222), ".tif"),
  };
  for (size_t i = 0; i < sources.size(); ++i) {
    for (auto [w, h] : {std::pair{224, 224}, {128, 128}, {300, 100}, {1, 1}}) {
      auto d = decode_for_model(sources[i], w, h, {});
      ASSERT_TRUE(d.ok()) << "source " << i << ": " << d.error().to_string();
      EXPECT_EQ(d->width, w);
      EXPECT_EQ(d->height, h);
      EXPECT_EQ(d->rgb.size(), static_cast<size_t>(w) * static_cast<size_t>(h) * 3) << "source " << i;
    }
  }
}

TEST_F(ImagingTest, DecodingKeepsColoursAcrossBitDepthsAndColourSpaces) {
  const VImage orange = VImage::black(64, 64).new_from_image({255, 128, 0}).cast(VIPS_FORMAT_UCHAR).copy(
      VImage::option()->set("interpretation", VIPS_INTERPRETATION_sRGB));
  auto eight = decode_for_model(encode(orange, ".png"), 8, 8, {});
  ASSERT_TRUE(eight.ok());
  expect_colour_near(pixel(*eight, 4, 4), {255, 128, 0}, 1, "8-bit PNG");

  auto sixteen = decode_for_model(encode(orange.colourspace(VIPS_INTERPRETATION_RGB16), ".png"), 8, 8, {});
  ASSERT_TRUE(sixteen.ok()) << sixteen.error().to_string();
  expect_colour_near(pixel(*sixteen, 4, 4), {255, 128, 0}, 2, "16-bit PNG");

  auto cmyk = decode_for_model(
      encode(orange.icc_export(VImage::option()->set("output_profile", "cmyk")), ".jpg"), 8, 8, {});
  ASSERT_TRUE(cmyk.ok()) << cmyk.error().to_string();
  expect_colour_near(pixel(*cmyk, 4, 4), {255, 128, 0}, 40, "CMYK JPEG");  // gamut round trip

  // A wide-gamut photo (Display P3 pixels with the profile embedded) is converted to sRGB.
  const VImage p3 = orange.icc_transform(
      "p3", VImage::option()->set("input_profile", "srgb")->set("intent", VIPS_INTENT_RELATIVE));
  ASSERT_NE(p3.get_typeof("icc-profile-data"), 0u);
  ASSERT_GT(std::abs(p3.getpoint(4, 4)[0] - 255.0), 5.0) << "P3 pixel values differ from sRGB";
  auto wide = decode_for_model(encode(p3, ".png"), 8, 8, {});
  ASSERT_TRUE(wide.ok()) << wide.error().to_string();
  expect_colour_near(pixel(*wide, 4, 4), {255, 128, 0}, 3, "P3 PNG");

  auto grey = decode_for_model(encode(orange.colourspace(VIPS_INTERPRETATION_B_W), ".jpg"), 8, 8, {});
  ASSERT_TRUE(grey.ok());
  const auto g = pixel(*grey, 4, 4);
  EXPECT_EQ(g[0], g[1]);
  EXPECT_EQ(g[1], g[2]);
}

TEST_F(ImagingTest, FlattensAlphaOntoWhite) {
  // Fully transparent black and half-transparent red.
  const VImage clear = VImage::black(32, 32, VImage::option()->set("bands", 4)).cast(VIPS_FORMAT_UCHAR).copy(
      VImage::option()->set("interpretation", VIPS_INTERPRETATION_sRGB));
  const VImage half_red = VImage::black(32, 32).new_from_image({255, 0, 0, 128}).cast(VIPS_FORMAT_UCHAR).copy(
      VImage::option()->set("interpretation", VIPS_INTERPRETATION_sRGB));
  for (const char* suffix : {".png", ".webp"}) {
    SCOPED_TRACE(suffix);
    auto white = decode_for_model(encode(clear, suffix), 16, 16, {});
    ASSERT_TRUE(white.ok()) << white.error().to_string();
    expect_colour_near(pixel(*white, 8, 8), {255, 255, 255}, 0, "transparent");
    const bool webp = std::string_view(suffix) == ".webp";
    auto pink = decode_for_model(
        encode(half_red, suffix, webp ? VImage::option()->set("lossless", true) : nullptr), 16, 16, {});
    ASSERT_TRUE(pink.ok());
    expect_colour_near(pixel(*pink, 8, 8), {255, 127, 127}, 2, "half red");
  }
  auto white16 = decode_for_model(encode(clear.colourspace(VIPS_INTERPRETATION_RGB16), ".png"), 16, 16, {});
  ASSERT_TRUE(white16.ok());
  expect_colour_near(pixel(*white16, 8, 8), {255, 255, 255}, 0, "16-bit transparent");
}

TEST_F(ImagingTest, AppliesExifOrientationSix) {
  // Stored 200x100 with orientation 6 ("rotate 90 degrees clockwise to display"): displayed it
  // is 100x200 with the stored top-left (red) quadrant at the top right.
  VImage stored = quadrants(200, 100);
  stored.set("orientation", 6);
  const std::vector<uint8_t> jpeg = encode(stored, ".jpg", VImage::option()->set("Q", 95));
  auto decoded = decode_for_model(jpeg, 50, 100, {});
  ASSERT_TRUE(decoded.ok()) << decoded.error().to_string();
  expect_colour_near(pixel(*decoded, 37, 12), {220, 0, 0}, 30, "top right: stored top-left red");
  expect_colour_near(pixel(*decoded, 37, 87), {0, 200, 0}, 30, "bottom right: stored top-right green");
  expect_colour_near(pixel(*decoded, 12, 12), {0, 0, 220}, 30, "top left: stored bottom-left blue");
  expect_colour_near(pixel(*decoded, 12, 87), {255, 255, 255}, 30, "bottom left: stored white");
}

TEST_F(ImagingTest, RefusesNonsenseOutputSizesAsACallerError) {
  const std::vector<uint8_t> jpeg = encode(gradient(32, 32), ".jpg");
  for (auto [w, h] : {std::pair{0, 10}, {10, -1}, {10000, 10}}) {
    auto d = decode_for_model(jpeg, w, h, {});
    ASSERT_FALSE(d.ok());
    EXPECT_EQ(d.error().code, ErrorCode::kInvalidArgument);
    EXPECT_EQ(d.error().context.count("reason"), 0u) << "not the upload's fault";
  }
  EXPECT_FALSE(make_thumbnail(jpeg, 0, ThumbnailFormat::kJpeg, {}).ok());
}

// ---- thumbnails ---------------------------------------------------------------------------------

TEST_F(ImagingTest, ThumbnailsFitTheLongEdgeKeepTheShapeAndDecode) {
  const std::vector<uint8_t> source = encode(gradient(1200, 800), ".jpg");
  for (auto [format, name] : {std::pair{ThumbnailFormat::kJpeg, "JPEG"}, {ThumbnailFormat::kWebp, "WEBP"}}) {
    auto thumb = make_thumbnail(source, 256, format, {});
    ASSERT_TRUE(thumb.ok()) << thumb.error().to_string();
    auto info = probe_buffer(*thumb, {});
    ASSERT_TRUE(info.ok()) << info.error().to_string();
    EXPECT_EQ(info->format, name);
    EXPECT_EQ(info->width, 256);
    EXPECT_NEAR(info->height, 171, 1);
    EXPECT_TRUE(decode_for_model(*thumb, 32, 32, {}).ok());
  }
}

TEST_F(ImagingTest, ThumbnailsNeverEnlarge) {
  auto thumb = make_thumbnail(encode(gradient(100, 50), ".png"), 256, ThumbnailFormat::kJpeg, {});
  ASSERT_TRUE(thumb.ok());
  auto info = probe_buffer(*thumb, {});
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->width, 100);
  EXPECT_EQ(info->height, 50);
}

TEST_F(ImagingTest, ThumbnailsAreUprightAndCarryNoMetadata) {
  VImage stored = quadrants(400, 200);
  stored.set("orientation", 6);
  stored.set("exif-ifd0-Artist", "someone private");
  const std::vector<uint8_t> jpeg = encode(stored, ".jpg");
  for (auto format : {ThumbnailFormat::kJpeg, ThumbnailFormat::kWebp}) {
    SCOPED_TRACE(format == ThumbnailFormat::kJpeg ? "JPEG" : "WebP");
    auto thumb = make_thumbnail(jpeg, 100, format, {});
    ASSERT_TRUE(thumb.ok());
    auto info = probe_buffer(*thumb, {});
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->width, 50);  // rotated: the long edge is now the height
    EXPECT_EQ(info->height, 100);
    EXPECT_EQ(info->orientation, 1);
    VImage loaded = load(*thumb);
    EXPECT_EQ(loaded.get_typeof("exif-ifd0-Artist"), 0u) << "the original EXIF must be gone";
    EXPECT_EQ(loaded.get_typeof("icc-profile-data"), 0u) << "ICC must be stripped";
    if (format == ThumbnailFormat::kJpeg) {
      EXPECT_EQ(loaded.get_typeof("exif-data"), 0u) << "no EXIF at all";
    } else if (loaded.get_typeof("exif-data") != 0) {
      // libvips 8.14's webpsave always writes a minimal generated EXIF block (resolution, pixel
      // size, orientation 1); it must at least not rotate the upright pixels again.
      EXPECT_EQ(loaded.get_int("orientation"), 1);
    }
  }
}

TEST_F(ImagingTest, WebpThumbnailsKeepAlphaJpegThumbnailsGoWhite) {
  const VImage clear = VImage::black(64, 64, VImage::option()->set("bands", 4)).cast(VIPS_FORMAT_UCHAR).copy(
      VImage::option()->set("interpretation", VIPS_INTERPRETATION_sRGB));
  const std::vector<uint8_t> png = encode(clear, ".png");
  auto webp = make_thumbnail(png, 32, ThumbnailFormat::kWebp, {});
  ASSERT_TRUE(webp.ok());
  EXPECT_TRUE(load(*webp).has_alpha());
  auto jpeg = make_thumbnail(png, 32, ThumbnailFormat::kJpeg, {});
  ASSERT_TRUE(jpeg.ok());
  VImage flat = load(*jpeg);
  EXPECT_EQ(flat.bands(), 3);
  EXPECT_GT(flat.min(), 250.0);
}

// ---- concurrency --------------------------------------------------------------------------------

TEST_F(ImagingTest, ConcurrentCallsGiveTheSameAnswersAsSequentialOnes) {
  const std::vector<uint8_t> jpeg = encode(gradient(500, 300), ".jpg");
  const std::vector<uint8_t> png = encode(gradient(300, 500), ".png");
  auto expected_jpeg = decode_for_model(jpeg, 64, 64, {});
  auto expected_png = decode_for_model(png, 64, 64, {});
  ASSERT_TRUE(expected_jpeg.ok() && expected_png.ok());
  std::vector<int> failures(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        auto a = decode_for_model(jpeg, 64, 64, {});
        auto b = decode_for_model(png, 64, 64, {});
        auto bad = probe_buffer(png_declaring(100000, 100000), {});
        if (!a.ok() || a->rgb != expected_jpeg->rgb || !b.ok() || b->rgb != expected_png->rgb ||
            bad.ok()) {
          ++failures[static_cast<size_t>(t)];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int f : failures) EXPECT_EQ(f, 0);
}

}  // namespace
}  // namespace deeplens
