// Image intake on libvips: probe an upload from its header alone, validate it by content (never by
// the client's file name or content type), decode it for a model with shrink-on-load, and make
// thumbnails.
//
// Errors are kInvalidArgument (or kResourceExhausted for limits) with context "reason" set to one
// of: "empty", "not_an_image", "unsupported_format", "too_large" (bytes), "too_many_pixels",
// "edge_too_long", "corrupt" — the API maps each to its own error code.
// All functions are thread-safe; call init_imaging() once at start-up.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"
#include "features/extractor.h"

namespace deeplens {

struct ImageLimits {
  int64_t max_bytes = 50 * 1024 * 1024;  // config upload.max_bytes
  int64_t max_pixels = 100'000'000;      // width*height; decompression bombs are refused from the header
  int max_edge = 30000;                  // longest side in pixels
};

struct ImageInfo {
  std::string format;        // "JPEG", "PNG", "WEBP", "GIF", "TIFF", "HEIF", "AVIF"
  std::string content_type;  // "image/jpeg", ...
  std::string extension;     // "jpg", "png", ... (for storage paths)
  int width = 0;             // as stored, before EXIF rotation
  int height = 0;
  std::string color_profile;  // "srgb", "cmyk", "b-w", ... (libvips interpretation, lower case)
  int orientation = 1;        // EXIF orientation 1..8
  bool has_alpha = false;
};

// Must be called once before any other function (initialises libvips). Idempotent.
Status init_imaging();

// Reads only what is needed to learn format and size; checks limits.
Result<ImageInfo> probe_file(const std::filesystem::path& path, const ImageLimits& limits);
Result<ImageInfo> probe_buffer(std::span<const uint8_t> bytes, const ImageLimits& limits);

// Decodes to exactly width x height sRGB RGB8 (aspect ratio not preserved), shrinking on load,
// applying EXIF orientation and flattening alpha onto white.
Result<DecodedImage> decode_for_model(std::span<const uint8_t> bytes, int width, int height,
                                      const ImageLimits& limits);

enum class ThumbnailFormat { kJpeg, kWebp };

// Encoded thumbnail whose long edge is at most long_edge pixels (aspect ratio preserved).
Result<std::vector<uint8_t>> make_thumbnail(std::span<const uint8_t> bytes, int long_edge,
                                            ThumbnailFormat format, const ImageLimits& limits);

}  // namespace deeplens
