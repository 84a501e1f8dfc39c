// Fuzzes upload intake on an image's first bytes: content sniffing and the structural checks
// (imaging/sniff.h, pure), then the libvips header probe (imaging/image.h probe_buffer, which reads
// the header through the sniffed format's own loader and never decodes pixels).
// Invariants:
//  - a sniff result is one of: an accepted format, a refused format's name, a damaged signature,
//    or nothing; names, content types and extensions exist exactly for accepted formats;
//  - sniffing looks at the first KiB only (sniff.h);
//  - png_declared_size reads bytes 16..23 of an IHDR-led PNG header, nothing else;
//  - a structure found whole stays whole with bytes appended, and no prefix of a broken one is
//    whole (appending after the end marker is allowed, sniff.h);
//  - the probe accepts only what sniffing accepts and the structural scan passes, reports that
//    format, positive dimensions within the limits and an orientation 1..8; tightening the pixel
//    limit below the image refuses it as "too_many_pixels"; every refusal names a known reason.
#include <cstddef>
#include <cstdint>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "common/log.h"
#include "fuzz_check.h"
#include "imaging/image.h"
#include "imaging/sniff.h"

namespace {

using namespace deeplens;

bool same(const SniffResult& a, const SniffResult& b) {
  return a.format == b.format && a.refused_format == b.refused_format && a.damaged_signature == b.damaged_signature;
}

void check_refusal(const Error& e) {
  static const std::set<std::string> kReasons = {"empty",           "not_an_image",  "unsupported_format", "too_large",
                                                 "too_many_pixels", "edge_too_long", "corrupt"};
  const auto reason = e.context.find("reason");
  FUZZ_CHECK(reason != e.context.end() && kReasons.count(reason->second), e.to_string().c_str());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  init_logging(LogOptions{LogLevel::kError, true});
  if (!init_imaging()) std::abort();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> bytes(data, size);
  const SniffResult sniffed = sniff_image_format(bytes);
  const bool accepted = sniffed.format != ImageFormat::kNone;
  FUZZ_CHECK(!accepted || (sniffed.refused_format.empty() && !sniffed.damaged_signature), "mixed sniff result");
  FUZZ_CHECK(!sniffed.damaged_signature || sniffed.refused_format.empty(), "damaged and refused at once");
  FUZZ_CHECK(format_name(sniffed.format).empty() == !accepted, "format_name");
  FUZZ_CHECK(format_content_type(sniffed.format).empty() == !accepted, "format_content_type");
  FUZZ_CHECK(format_extension(sniffed.format).empty() == !accepted, "format_extension");
  if (size > 1024) FUZZ_CHECK(same(sniffed, sniff_image_format(bytes.first(1024))), "sniffing read past 1 KiB");

  if (const auto declared = png_declared_size(bytes)) {
    FUZZ_CHECK(size >= 24, "IHDR read past the end");
    FUZZ_CHECK(declared->width == (uint32_t{data[16]} << 24 | uint32_t{data[17]} << 16 | uint32_t{data[18]} << 8 | data[19]),
               "IHDR width");
  }

  const auto problem = find_structural_problem(sniffed.format, bytes);
  if (sniffed.format != ImageFormat::kJpeg && sniffed.format != ImageFormat::kPng && sniffed.format != ImageFormat::kWebp)
    FUZZ_CHECK(!problem, "a format without a structural check reported a problem");
  if (!problem) {
    std::vector<uint8_t> longer(bytes.begin(), bytes.end());
    longer.insert(longer.end(), bytes.begin(), bytes.end());
    FUZZ_CHECK(!find_structural_problem(sniffed.format, longer), "appending bytes broke a whole structure");
  } else if (size > 0) {
    const size_t cut = size - 1 - data[0] % size;  // a prefix picked by the input
    FUZZ_CHECK(find_structural_problem(sniffed.format, bytes.first(cut)).has_value(), "a prefix of a broken structure is whole");
  }

  const ImageLimits limits;
  const auto probed = probe_buffer(bytes, limits);
  if (!probed) {
    check_refusal(probed.error());
    return 0;
  }
  const ImageInfo& info = *probed;
  FUZZ_CHECK(accepted, "probe accepted what sniffing refuses");
  FUZZ_CHECK(!problem, "probe accepted a broken structure");
  const bool heif_family = sniffed.format == ImageFormat::kHeif || sniffed.format == ImageFormat::kAvif;
  FUZZ_CHECK(info.format == format_name(sniffed.format) || (heif_family && (info.format == "HEIF" || info.format == "AVIF")),
             info.format.c_str());
  FUZZ_CHECK(!info.content_type.empty() && !info.extension.empty(), "content type / extension");
  FUZZ_CHECK(info.width > 0 && info.height > 0, "no pixels");
  FUZZ_CHECK(int64_t{info.width} * info.height <= limits.max_pixels, "pixel limit");
  FUZZ_CHECK(std::max(info.width, info.height) <= limits.max_edge, "edge limit");
  FUZZ_CHECK(info.orientation >= 1 && info.orientation <= 8, "orientation");

  ImageLimits tight = limits;
  tight.max_pixels = int64_t{info.width} * info.height - 1;
  const auto refused = probe_buffer(bytes, tight);
  FUZZ_CHECK(!refused && refused.error().context.count("reason") &&
                 refused.error().context.at("reason") == "too_many_pixels",
             "a tighter pixel limit did not refuse the image");
  return 0;
}
