// Magic-byte sniffing and structural checks: pure functions over bytes, no libvips.
#include "imaging/sniff.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace deeplens {
namespace {

std::vector<uint8_t> bytes(std::string_view s) { return {s.begin(), s.end()}; }

std::vector<uint8_t> operator+(std::vector<uint8_t> a, const std::vector<uint8_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

SniffResult sniff(std::string_view s) { return sniff_image_format(bytes(s)); }

TEST(Sniff, RecognisesEveryAcceptedFormatByItsMagicBytes) {
  using namespace std::string_view_literals;
  EXPECT_EQ(sniff("\xFF\xD8\xFF\xE0\x00\x10JFIF"sv).format, ImageFormat::kJpeg);
  EXPECT_EQ(sniff("\x89PNG\r\n\x1A\n\0\0\0\rIHDR"sv).format, ImageFormat::kPng);
  EXPECT_EQ(sniff("RIFF\x24\0\0\0WEBPVP8 "sv).format, ImageFormat::kWebp);
  EXPECT_EQ(sniff("GIF87a\x01\0\x01\0"sv).format, ImageFormat::kGif);
  EXPECT_EQ(sniff("GIF89a\x01\0\x01\0"sv).format, ImageFormat::kGif);
  EXPECT_EQ(sniff("II*\0\x08\0\0\0"sv).format, ImageFormat::kTiff);
  EXPECT_EQ(sniff("MM\0*\0\0\0\x08"sv).format, ImageFormat::kTiff);
  EXPECT_EQ(sniff("II+\0\x08\0\0\0"sv).format, ImageFormat::kTiff);  // BigTIFF
  EXPECT_EQ(sniff("\0\0\0\x18" "ftypheic\0\0\0\0mif1heic"sv).format, ImageFormat::kHeif);
  EXPECT_EQ(sniff("\0\0\0\x18" "ftypmif1\0\0\0\0mif1heic"sv).format, ImageFormat::kHeif);
  EXPECT_EQ(sniff("\0\0\0\x1C" "ftypavif\0\0\0\0avifmif1miaf"sv).format, ImageFormat::kAvif);
  // mif1 as major brand with avif among the compatible brands is an AVIF.
  EXPECT_EQ(sniff("\0\0\0\x18" "ftypmif1\0\0\0\0mif1avif"sv).format, ImageFormat::kAvif);
}

// Found by tests/fuzz (fuzz_sniff): an ftyp box declaring a huge size made the brand scan walk the
// whole input, so a brand past the first KiB (sniff.h's bound) changed the answer.
TEST(Sniff, ReadsFtypBrandsWithinTheFirstKibOnly) {
  using namespace std::string_view_literals;
  std::vector<uint8_t> heif = bytes("\x7F\xFF\xFF\xFF" "ftypmif1\0\0\0\0mif1heic"sv);
  heif.resize(1024, 0);
  EXPECT_EQ(sniff_image_format(heif).format, ImageFormat::kHeif);
  EXPECT_EQ(sniff_image_format(heif + bytes("avif")).format, ImageFormat::kHeif);
}

TEST(Sniff, NamesRefusedImageFormats) {
  using namespace std::string_view_literals;
  auto refused = [](std::string_view s) { return std::string(sniff(s).refused_format); };
  EXPECT_EQ(refused("BM\x36\x00\x0C\x00\x00\x00\x00\x00\x36\x00\x00\x00\x28\x00\x00\x00"sv), "BMP");
  EXPECT_EQ(refused("\0\0\x01\0\x01\0\x10\x10"sv), "ICO");
  EXPECT_EQ(refused("%PDF-1.7\n"), "PDF");
  EXPECT_EQ(refused("<svg xmlns=\"http://www.w3.org/2000/svg\"/>"), "SVG");
  EXPECT_EQ(refused("\xEF\xBB\xBF  <?xml version=\"1.0\"?>\n<!-- x -->\n<svg width=\"1\"/>"), "SVG");
  EXPECT_EQ(refused("8BPS\0\x01"sv), "PSD");
  EXPECT_EQ(refused("\xFF\x0A\xFA"sv), "JPEG XL");
  EXPECT_EQ(refused("\0\0\0\x0CjP  \r\n\x87\n"sv), "JPEG 2000");
  EXPECT_EQ(refused("P6\n3 2\n255\n"), "PNM");
  EXPECT_EQ(refused("qoif\0\0\0\x01"sv), "QOI");
  EXPECT_EQ(refused("#?RADIANCE\n"), "Radiance HDR");
  EXPECT_EQ(refused("\0\0\0\x18" "ftypcrx \0\0\0\0crx isom"sv), "CR3");
  for (std::string_view s : {"BM\x36\x00\x0C\x00\x00\x00\x00\x00\x36\x00\x00\x00\x28\x00\x00\x00"sv,
                             "%PDF-1.7"sv, "<svg/>"sv}) {
    EXPECT_EQ(sniff(s).format, ImageFormat::kNone);
  }
}

TEST(Sniff, TextXmlVideoAndNearMissesAreNotImages) {
  using namespace std::string_view_literals;
  for (std::string_view s :
       {"hello, this is a text file named photo.jpg\n"sv, "BMW 320d for sale"sv,
        "<?xml version=\"1.0\"?><html/>"sv, "\0\0\0\x18" "ftypisom\0\0\0\0isomiso2"sv,
        "RIFF\x24\0\0\0WAVEfmt "sv, "{\"json\": true}"sv, "\xFF\xD8"sv, ""sv, "\x89PN"sv}) {
    const SniffResult r = sniff(s);
    EXPECT_EQ(r.format, ImageFormat::kNone) << s;
    EXPECT_TRUE(r.refused_format.empty()) << s;
  }
}

TEST(Sniff, FlagsADamagedSignature) {
  using namespace std::string_view_literals;
  // A PNG whose CR LF became LF in a text-mode transfer.
  const SniffResult r = sniff("\x89PNG\n\x1A\n\0\0\0\rIHDR"sv);
  EXPECT_EQ(r.format, ImageFormat::kNone);
  EXPECT_TRUE(r.damaged_signature);
  EXPECT_FALSE(sniff("plain text"sv).damaged_signature);
}

TEST(Sniff, NamesContentTypesAndExtensions) {
  EXPECT_EQ(format_name(ImageFormat::kWebp), "WEBP");
  EXPECT_EQ(format_content_type(ImageFormat::kJpeg), "image/jpeg");
  EXPECT_EQ(format_content_type(ImageFormat::kAvif), "image/avif");
  EXPECT_EQ(format_extension(ImageFormat::kJpeg), "jpg");
  EXPECT_EQ(format_extension(ImageFormat::kTiff), "tiff");
  EXPECT_EQ(format_name(ImageFormat::kNone), "");
}

TEST(PngDeclaredSize, ReadsTheIhdrWithoutLibpng) {
  using namespace std::string_view_literals;
  const auto png = bytes("\x89PNG\r\n\x1A\n\0\0\0\rIHDR\0\x01\x86\xA0\0\0\x00\x10\x08\x02\0\0\0"sv);
  const auto size = png_declared_size(png);
  ASSERT_TRUE(size.has_value());
  EXPECT_EQ(size->width, 100000u);
  EXPECT_EQ(size->height, 16u);
  EXPECT_FALSE(png_declared_size(bytes("\x89PNG\r\n\x1A\n\0\0\0\rIHDR\0\x01"sv)).has_value());
  EXPECT_FALSE(png_declared_size(bytes("\x89PNG\r\n\x1A\n\0\0\0\rtEXt\0\x01\x86\xA0\0\0\x00\x10"sv)).has_value());
}

// A minimal JPEG skeleton: SOI, an APP0, a DQT-like segment, SOS with entropy data, EOI.
std::vector<uint8_t> jpeg_skeleton(std::string_view entropy, bool with_eoi) {
  using namespace std::string_view_literals;
  auto b = bytes("\xFF\xD8"
                 "\xFF\xE0\x00\x06JF"
                 "\xFF\xDB\x00\x04\x01\x02"
                 "\xFF\xDA\x00\x04\x00\x00"sv) +
           bytes(entropy);
  if (with_eoi) b = b + bytes("\xFF\xD9"sv);
  return b;
}

TEST(StructuralProblem, JpegMustReachItsEndOfImageMarker) {
  using namespace std::string_view_literals;
  EXPECT_FALSE(find_structural_problem(ImageFormat::kJpeg, jpeg_skeleton("\x12\x34\x56"sv, true)));
  // Stuffed 0xFF00, restart markers and fill bytes inside the scan are not the end.
  EXPECT_FALSE(find_structural_problem(ImageFormat::kJpeg,
                                       jpeg_skeleton("\x12\xFF\x00\x34\xFF\xD3\x56\xFF\xFF"sv, true)));
  // Progressive: a second table and scan after the first.
  EXPECT_FALSE(find_structural_problem(
      ImageFormat::kJpeg,
      jpeg_skeleton("\x12\xFF\xC4\x00\x03\x00\xFF\xDA\x00\x04\x00\x00\x77"sv, true)));
  // Bytes after EOI (camera trailers, motion photos) are fine.
  EXPECT_FALSE(find_structural_problem(ImageFormat::kJpeg,
                                       jpeg_skeleton("\x12"sv, true) + bytes("trailer"sv)));

  auto problem = find_structural_problem(ImageFormat::kJpeg, jpeg_skeleton("\x12\x34\x56"sv, false));
  ASSERT_TRUE(problem);
  EXPECT_NE(problem->find("truncated"), std::string::npos);
  EXPECT_TRUE(find_structural_problem(ImageFormat::kJpeg, jpeg_skeleton("\x12\xFF\x00"sv, false)));
  // Cut inside a segment header.
  EXPECT_TRUE(find_structural_problem(ImageFormat::kJpeg, bytes("\xFF\xD8\xFF\xE0\x00\x10JF"sv)));
  EXPECT_TRUE(find_structural_problem(ImageFormat::kJpeg, bytes("\xFF\xD8\xFF"sv)));
  // A segment length below 2 is malformed.
  problem = find_structural_problem(ImageFormat::kJpeg, bytes("\xFF\xD8\xFF\xE0\x00\x01\xFF\xD9"sv));
  ASSERT_TRUE(problem);
  EXPECT_NE(problem->find("0xFFE0"), std::string::npos) << *problem;
}

TEST(StructuralProblem, PngMustReachIend) {
  using namespace std::string_view_literals;
  const auto head = bytes("\x89PNG\r\n\x1A\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0CRC!"sv);
  const auto idat = bytes("\0\0\0\x02IDATxyCRC!"sv);
  const auto iend = bytes("\0\0\0\0IENDCRC!"sv);
  EXPECT_FALSE(find_structural_problem(ImageFormat::kPng, head + idat + iend));
  EXPECT_TRUE(find_structural_problem(ImageFormat::kPng, head + idat));
  auto cut = head + idat + iend;
  cut.resize(cut.size() - 1);
  EXPECT_TRUE(find_structural_problem(ImageFormat::kPng, cut));
  // A chunk claiming more bytes than there are.
  EXPECT_TRUE(find_structural_problem(ImageFormat::kPng, head + bytes("\0\0\x10\0IDATxy"sv) + iend));
}

TEST(StructuralProblem, WebpMustHoldItsRiffLength) {
  using namespace std::string_view_literals;
  EXPECT_FALSE(find_structural_problem(ImageFormat::kWebp, bytes("RIFF\x06\0\0\0WEBPxy"sv)));
  EXPECT_FALSE(find_structural_problem(ImageFormat::kWebp, bytes("RIFF\x06\0\0\0WEBPxyextra"sv)));
  auto problem = find_structural_problem(ImageFormat::kWebp, bytes("RIFF\x10\0\0\0WEBPxy"sv));
  ASSERT_TRUE(problem);
  EXPECT_NE(problem->find("truncated"), std::string::npos);
}

TEST(StructuralProblem, OtherFormatsAreLeftToTheirLoaders) {
  EXPECT_FALSE(find_structural_problem(ImageFormat::kGif, bytes("GIF89a")));
  EXPECT_FALSE(find_structural_problem(ImageFormat::kTiff, bytes("II*")));
}

}  // namespace
}  // namespace deeplens
