// Content sniffing for uploads: which image format a byte string is, judged from its magic bytes
// alone (never from a file name or a client's content type), plus cheap structural checks that need
// no pixel decoding (declared PNG size, truncation). imaging/image.cc runs these before any libvips
// loader sees the bytes, so a loader we did not choose never runs on user input.
//
// Pure functions over caller-owned bytes; no I/O, no allocation beyond small strings; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace deeplens {

// The formats we accept. kNone: not one of them.
enum class ImageFormat { kNone, kJpeg, kPng, kWebp, kGif, kTiff, kHeif, kAvif };

struct SniffResult {
  ImageFormat format = ImageFormat::kNone;  // an accepted format, or kNone
  // When format is kNone: the name of a recognised image/document format we refuse ("BMP", "SVG",
  // "PDF", ...), or empty when the bytes are no image format we know at all.
  std::string_view refused_format;
  // When format is kNone and refused_format is empty: true if the bytes start like an accepted
  // format but the signature is damaged (e.g. a PNG signature mangled by a text-mode transfer).
  bool damaged_signature = false;
};

// Looks at the first bytes only (at most 1 KiB, for SVG/XML sniffing).
SniffResult sniff_image_format(std::span<const uint8_t> bytes);

// "JPEG", "PNG", "WEBP", "GIF", "TIFF", "HEIF", "AVIF".
std::string_view format_name(ImageFormat format);
// "image/jpeg", ...
std::string_view format_content_type(ImageFormat format);
// "jpg", "png", "webp", "gif", "tiff", "heif", "avif" (for storage paths).
std::string_view format_extension(ImageFormat format);

struct DeclaredSize {
  uint32_t width = 0;
  uint32_t height = 0;
};

// The size a PNG's IHDR chunk declares (bytes 16..23), read without libpng so that absurd
// dimensions are refused as a pixel-limit violation even where libpng would refuse them with a
// generic error. nullopt when the IHDR is missing or cut short.
std::optional<DeclaredSize> png_declared_size(std::span<const uint8_t> bytes);

// Whether the container structure is whole, without decoding: JPEG segments are well formed and the
// stream reaches EOI (segments walked, entropy-coded data scanned), PNG chunks reach IEND, WebP's
// RIFF length fits in the bytes. Other formats are not checked here (their loaders see truncation).
// Bytes after the end marker are allowed (cameras append data there). Returns a description of the
// problem (truncation or a malformed segment), or nullopt when the structure is whole. Linear in the size of a
// JPEG (a memchr-speed scan of the entropy-coded data), one jump per chunk for PNG.
std::optional<std::string> find_structural_problem(ImageFormat format, std::span<const uint8_t> bytes);

}  // namespace deeplens
