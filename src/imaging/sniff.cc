#include "imaging/sniff.h"

#include <algorithm>
#include <cstring>

namespace deeplens {
namespace {

bool starts_with(std::span<const uint8_t> b, size_t offset, std::string_view magic) {
  if (b.size() < offset + magic.size()) return false;
  return std::memcmp(b.data() + offset, magic.data(), magic.size()) == 0;
}

uint32_t be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}
uint32_t le32(const uint8_t* p) {
  return uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
}
uint16_t le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }

// ISO base media file ("ftyp" box first): HEIF/AVIF stills are accepted; other members of the
// family (MP4/QuickTime video, Canon CR3) are not images we take.
SniffResult sniff_ftyp(std::span<const uint8_t> b) {
  SniffResult r;
  if (b.size() < 16) return r;
  uint32_t box_size = be32(b.data());
  // The brands within the box, and within the first KiB (sniff.h): a box size of up to 4 GiB
  // must not make the sniffer walk a whole upload.
  size_t end = std::min<size_t>({b.size(), std::max<uint32_t>(box_size, 16), 1024});
  auto brand_at = [&](size_t off) { return std::string_view(reinterpret_cast<const char*>(b.data() + off), 4); };
  bool avif = false;
  bool heif = false;
  auto classify = [&](std::string_view brand) {
    if (brand == "avif" || brand == "avis") avif = true;
    if (brand == "heic" || brand == "heix" || brand == "heim" || brand == "heis" || brand == "hevc" ||
        brand == "hevx" || brand == "mif1" || brand == "msf1") {
      heif = true;
    }
  };
  std::string_view major = brand_at(8);
  classify(major);
  for (size_t off = 16; off + 4 <= end; off += 4) classify(brand_at(off));
  if (major == "avif" || major == "avis" || (avif && !(major == "heic" || major == "heix"))) {
    r.format = ImageFormat::kAvif;
  } else if (heif) {
    r.format = ImageFormat::kHeif;
  } else if (major == "crx ") {
    r.refused_format = "CR3";
  }
  return r;
}

// An SVG (or other XML) document: optional BOM and whitespace, then "<svg", or an XML prologue /
// comment / doctype followed by an <svg element within the first KiB.
bool looks_like_svg(std::span<const uint8_t> b) {
  size_t n = std::min<size_t>(b.size(), 1024);
  std::string_view text(reinterpret_cast<const char*>(b.data()), n);
  if (text.starts_with("\xEF\xBB\xBF")) text.remove_prefix(3);
  size_t first = text.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return false;
  text.remove_prefix(first);
  if (text.starts_with("<svg")) return true;
  if (text.starts_with("<?xml") || text.starts_with("<!--") || text.starts_with("<!DOCTYPE")) {
    return text.find("<svg") != std::string_view::npos;
  }
  return false;
}

std::string_view sniff_refused(std::span<const uint8_t> b) {
  if (starts_with(b, 0, "BM") && b.size() >= 18) {
    uint32_t dib = le32(b.data() + 14);
    if (dib == 12 || dib == 16 || dib == 40 || dib == 52 || dib == 56 || dib == 64 || dib == 108 ||
        dib == 124) {
      return "BMP";
    }
  }
  if (b.size() >= 6 && b[0] == 0 && b[1] == 0 && (b[2] == 1 || b[2] == 2) && b[3] == 0 &&
      le16(b.data() + 4) > 0) {
    return b[2] == 1 ? "ICO" : "CUR";
  }
  if (starts_with(b, 0, "%PDF-")) return "PDF";
  if (starts_with(b, 0, "%!PS")) return "PostScript";
  if (starts_with(b, 0, "8BPS")) return "PSD";
  if (starts_with(b, 0, std::string_view("\x00\x00\x00\x0CjP  \r\n\x87\n", 12)) ||
      starts_with(b, 0, "\xFF\x4F\xFF\x51")) {
    return "JPEG 2000";
  }
  if (starts_with(b, 0, "\xFF\x0A") ||
      starts_with(b, 0, std::string_view("\x00\x00\x00\x0CJXL \r\n\x87\n", 12))) {
    return "JPEG XL";
  }
  if (starts_with(b, 0, "II\xBC")) return "JPEG XR";
  if (starts_with(b, 0, "\x76\x2F\x31\x01")) return "OpenEXR";
  if (starts_with(b, 0, "#?RADIANCE") || starts_with(b, 0, "#?RGBE")) return "Radiance HDR";
  if (b.size() >= 3 && b[0] == 'P' && b[1] >= '1' && b[1] <= '7' &&
      (b[2] == ' ' || b[2] == '\n' || b[2] == '\r' || b[2] == '\t')) {
    return "PNM";
  }
  if (starts_with(b, 0, "SIMPLE  =")) return "FITS";
  if (starts_with(b, 0, "\x08\xF2\xA6\xB6") || starts_with(b, 0, "\xB6\xA6\xF2\x08")) return "VIPS";
  if (starts_with(b, 0, "qoif")) return "QOI";
  if (starts_with(b, 0, "DDS ")) return "DDS";
  if (starts_with(b, 0, "gimp xcf")) return "XCF";
  if (starts_with(b, 0, "MATLAB 5.0 MAT-file")) return "MAT";
  if (starts_with(b, 128, "DICM")) return "DICOM";
  if (looks_like_svg(b)) return "SVG";
  return {};
}

std::optional<std::string> jpeg_structural_problem(std::span<const uint8_t> b) {
  const uint8_t* p = b.data();
  const size_t n = b.size();
  const std::string truncated = "JPEG data ends before its end-of-image marker (truncated)";
  size_t pos = 2;  // after SOI
  for (;;) {
    // Expect a marker. Tolerate stray bytes before it as libjpeg does ("extraneous bytes").
    if (pos >= n) return truncated;
    if (p[pos] != 0xFF) {
      const void* ff = std::memchr(p + pos, 0xFF, n - pos);
      if (ff == nullptr) return truncated;
      pos = static_cast<size_t>(static_cast<const uint8_t*>(ff) - p);
    }
    while (pos < n && p[pos] == 0xFF) ++pos;  // fill bytes
    if (pos >= n) return truncated;
    const uint8_t marker = p[pos++];
    if (marker == 0xD9) return std::nullopt;  // EOI
    if (marker == 0x01 || marker == 0xD8 || (marker >= 0xD0 && marker <= 0xD7) || marker == 0x00) {
      continue;  // markers without a length
    }
    if (pos + 2 > n) return truncated;
    const size_t length = (size_t{p[pos]} << 8) | p[pos + 1];
    if (length < 2) {
      constexpr char kHex[] = "0123456789ABCDEF";
      return std::string("JPEG segment 0xFF") + kHex[marker >> 4] + kHex[marker & 0xF] +
             " at offset " + std::to_string(pos - 2) + " has an invalid length";
    }
    if (pos + length > n) return truncated;
    pos += length;
    if (marker != 0xDA) continue;  // not start-of-scan
    // Entropy-coded data follows a scan header: it ends at the first 0xFF that is neither a stuffed
    // zero, a restart marker nor a fill byte.
    for (;;) {
      const void* ff = pos < n ? std::memchr(p + pos, 0xFF, n - pos) : nullptr;
      if (ff == nullptr) return truncated;
      size_t q = static_cast<size_t>(static_cast<const uint8_t*>(ff) - p);
      if (q + 1 >= n) return truncated;
      const uint8_t next = p[q + 1];
      if (next == 0x00 || (next >= 0xD0 && next <= 0xD7)) {
        pos = q + 2;
      } else if (next == 0xFF) {
        pos = q + 1;
      } else {
        pos = q;
        break;
      }
    }
  }
}

std::optional<std::string> png_structural_problem(std::span<const uint8_t> b) {
  const size_t n = b.size();
  size_t pos = 8;
  for (;;) {
    if (pos + 8 > n) return "PNG data ends before its IEND chunk (truncated)";
    const uint32_t length = be32(b.data() + pos);
    if (length > 0x7FFFFFFFu) {
      return "PNG chunk at offset " + std::to_string(pos) + " has an invalid length";
    }
    const bool iend = std::memcmp(b.data() + pos + 4, "IEND", 4) == 0;
    if (n - pos < 12 + size_t{length}) return "PNG data ends before its IEND chunk (truncated)";
    if (iend) return std::nullopt;
    pos += 12 + size_t{length};
  }
}

std::optional<std::string> webp_structural_problem(std::span<const uint8_t> b) {
  if (b.size() < 12) return "WebP data is shorter than its RIFF header";
  const uint64_t riff_end = uint64_t{le32(b.data() + 4)} + 8;
  if (riff_end > b.size()) {
    return "WebP data is " + std::to_string(b.size()) + " bytes but its RIFF header declares " +
           std::to_string(riff_end) + " (truncated)";
  }
  return std::nullopt;
}

}  // namespace

SniffResult sniff_image_format(std::span<const uint8_t> b) {
  SniffResult r;
  if (starts_with(b, 0, "\xFF\xD8\xFF")) {
    r.format = ImageFormat::kJpeg;
  } else if (starts_with(b, 0, "\x89PNG\r\n\x1A\n")) {
    r.format = ImageFormat::kPng;
  } else if (starts_with(b, 0, "RIFF") && starts_with(b, 8, "WEBP")) {
    r.format = ImageFormat::kWebp;
  } else if (starts_with(b, 0, "GIF87a") || starts_with(b, 0, "GIF89a")) {
    r.format = ImageFormat::kGif;
  } else if (starts_with(b, 0, std::string_view("II*\0", 4)) ||
             starts_with(b, 0, std::string_view("MM\0*", 4)) ||
             starts_with(b, 0, std::string_view("II+\0", 4)) ||
             starts_with(b, 0, std::string_view("MM\0+", 4))) {
    r.format = ImageFormat::kTiff;
  } else if (starts_with(b, 4, "ftyp")) {
    r = sniff_ftyp(b);
  } else {
    r.refused_format = sniff_refused(b);
    if (r.refused_format.empty()) {
      r.damaged_signature = starts_with(b, 0, "\x89PNG") || starts_with(b, 0, "\xFF\xD8") ||
                            starts_with(b, 0, "GIF8");
    }
  }
  return r;
}

std::string_view format_name(ImageFormat format) {
  switch (format) {
    case ImageFormat::kJpeg: return "JPEG";
    case ImageFormat::kPng: return "PNG";
    case ImageFormat::kWebp: return "WEBP";
    case ImageFormat::kGif: return "GIF";
    case ImageFormat::kTiff: return "TIFF";
    case ImageFormat::kHeif: return "HEIF";
    case ImageFormat::kAvif: return "AVIF";
    case ImageFormat::kNone: break;
  }
  return "";
}

std::string_view format_content_type(ImageFormat format) {
  switch (format) {
    case ImageFormat::kJpeg: return "image/jpeg";
    case ImageFormat::kPng: return "image/png";
    case ImageFormat::kWebp: return "image/webp";
    case ImageFormat::kGif: return "image/gif";
    case ImageFormat::kTiff: return "image/tiff";
    case ImageFormat::kHeif: return "image/heif";
    case ImageFormat::kAvif: return "image/avif";
    case ImageFormat::kNone: break;
  }
  return "";
}

std::string_view format_extension(ImageFormat format) {
  switch (format) {
    case ImageFormat::kJpeg: return "jpg";
    case ImageFormat::kPng: return "png";
    case ImageFormat::kWebp: return "webp";
    case ImageFormat::kGif: return "gif";
    case ImageFormat::kTiff: return "tiff";
    case ImageFormat::kHeif: return "heif";
    case ImageFormat::kAvif: return "avif";
    case ImageFormat::kNone: break;
  }
  return "";
}

std::optional<DeclaredSize> png_declared_size(std::span<const uint8_t> b) {
  // signature (8) + IHDR length (4) + "IHDR" (4) + width (4) + height (4)
  if (b.size() < 24 || !starts_with(b, 12, "IHDR")) return std::nullopt;
  return DeclaredSize{be32(b.data() + 16), be32(b.data() + 20)};
}

std::optional<std::string> find_structural_problem(ImageFormat format,
                                                   std::span<const uint8_t> bytes) {
  switch (format) {
    case ImageFormat::kJpeg: return jpeg_structural_problem(bytes);
    case ImageFormat::kPng: return png_structural_problem(bytes);
    case ImageFormat::kWebp: return webp_structural_problem(bytes);
    default: return std::nullopt;
  }
}

}  // namespace deeplens
