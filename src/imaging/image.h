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

// Process-wide libvips settings, applied once by the first init_imaging call.
struct ImagingOptions {
  // libvips operation cache, in operations. 0 (default): no cache. A server never repeats an
  // operation on the same image, so a cache only holds memory (and buffer loads are keyed by
  // address, which a later upload can reuse).
  int cache_max_operations = 0;
  // Threads libvips uses inside one image's pipeline. 1 (default): callers parallelise across
  // images (one image per extractor/upload thread), so per-image threads would only oversubscribe
  // the cores and multiply per-image buffers; with 1 thread libvips 8.14 also reports a decode
  // error reliably (with several it can drop one raised behind a shared tile cache).
  int concurrency = 1;
  // Block every libvips loader except the accepted formats' own (JPEG, PNG, WebP, GIF, TIFF,
  // HEIF/AVIF), process-wide, so no code path can hand user bytes to the SVG, PDF, ImageMagick,
  // matrix, CSV, raw ... loaders. This module never uses libvips' content-based loader dispatch
  // anyway; this is the second wall.
  bool restrict_loaders = true;
};

// Initialises libvips. Call once at start-up, before other threads use this module; later calls
// (with any options) return the first call's status. The other functions call init_imaging() with
// default options themselves if nobody has, so a forgotten call costs defaults, not a crash.
Status init_imaging(const ImagingOptions& options);
Status init_imaging();  // default ImagingOptions

// The accepted formats this libvips build has a loader for, e.g. {"JPEG", "PNG", "WEBP", "GIF",
// "TIFF", "HEIF", "AVIF"} (HEIF/AVIF need libvips built with libheif; decoding them also needs
// libheif's HEVC / AV1 decoder plugins, which Debian bookworm ships: libde265, dav1d/aom).
std::vector<std::string> supported_formats();

// Reads only what is needed to learn format and size, never decodes pixels; checks limits. In
// order: "empty"; "too_large" (bytes, before reading anything); magic bytes ("not_an_image",
// "unsupported_format"); the header ("corrupt" if unreadable); "too_many_pixels", then
// "edge_too_long"; finally a structural scan without decoding ("corrupt": a JPEG without its
// end-of-image marker, a PNG cut before IEND, a WebP shorter than its RIFF length). A PNG's
// declared size and chunk walk come before its header is read (libpng allocates what a chunk
// declares).
// probe_file maps the file read-only (it must not be truncated while being probed: give it the
// upload's own temp file); errors carry context "path", and kNotFound / kIoError when the file
// cannot be opened.
Result<ImageInfo> probe_file(const std::filesystem::path& path, const ImageLimits& limits);
Result<ImageInfo> probe_buffer(std::span<const uint8_t> bytes, const ImageLimits& limits);

// Decodes to exactly width x height sRGB RGB8 (aspect ratio not preserved), shrinking on load,
// applying EXIF orientation and flattening alpha onto white. Runs every probe check first, so a
// decompression bomb is refused before any pixel is decoded; a stream that fails while decoding
// is "corrupt" (truncation is an error, never grey fill). Animated GIF/WebP: the first frame.
// width and height must be 1..8192 (kInvalidArgument without a "reason" otherwise: a caller bug).
Result<DecodedImage> decode_for_model(std::span<const uint8_t> bytes, int width, int height,
                                      const ImageLimits& limits);

enum class ThumbnailFormat { kJpeg, kWebp };

// Encoded thumbnail whose long edge is at most long_edge pixels (aspect ratio preserved, never
// enlarged), EXIF orientation applied, converted to sRGB, metadata stripped, quality 80. JPEG
// flattens alpha onto white; WebP keeps it. Same checks and errors as decode_for_model;
// long_edge must be 1..8192.
Result<std::vector<uint8_t>> make_thumbnail(std::span<const uint8_t> bytes, int long_edge,
                                            ThumbnailFormat format, const ImageLimits& limits);

}  // namespace deeplens
