// libvips implementation of imaging/image.h.
//
// Every entry point runs the same gate (inspect): size limit, magic-byte sniffing (sniff.h), then
// the header through the sniffed format's own loader, pixel limits from that header, and a
// structural scan. Only then are pixels decoded, again through that one loader (never libvips'
// content-based dispatch), with shrink-on-load where the format has it (JPEG DCT scaling, WebP
// scaled decoding, a HEIF's embedded thumbnail when big enough) and fail_on=error so that a broken
// stream fails instead of being grey-filled. vips_thumbnail_image then applies the EXIF
// orientation, colour management (embedded ICC profile to sRGB) and the final resample.
// (vips_thumbnail_buffer would do the loading too, but it picks the loader itself and, in libvips
// 8.14, lets truncated JPEG data through as grey.)
#include "imaging/image.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vips/vips.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/log.h"
#include "imaging/sniff.h"

namespace deeplens {
namespace {

constexpr int kMaxOutputEdge = 8192;
constexpr const char* kAcceptedFormats = "JPEG, PNG, WebP, GIF, TIFF, HEIF or AVIF";

struct GObjectUnref {
  void operator()(VipsImage* image) const {
    if (image != nullptr) g_object_unref(image);
  }
};
using ImagePtr = std::unique_ptr<VipsImage, GObjectUnref>;

// libvips' error buffer is process-wide; take (and clear) what is there for the error's context.
std::string take_vips_error() {
  char* text = vips_error_buffer_copy();
  std::string out = text != nullptr ? text : "";
  g_free(text);
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  for (char& c : out) {
    if (c == '\n') c = ';';
  }
  return out;
}

Error input_error(std::string_view reason, std::string message) {
  return Error(ErrorCode::kInvalidArgument, std::move(message)).with("reason", std::string(reason));
}

Error limit_error(std::string_view reason, std::string message) {
  return Error(ErrorCode::kResourceExhausted, std::move(message)).with("reason", std::string(reason));
}

Error corrupt_error(ImageFormat format, std::string what, std::string detail) {
  Error e = input_error("corrupt", "the " + std::string(format_name(format)) +
                                       " image is damaged or incomplete (" + what +
                                       "); upload the original file again");
  e.with("format", std::string(format_name(format)));
  if (!detail.empty()) e.with("detail", std::move(detail));
  return e;
}

// ---- initialisation ---------------------------------------------------------------------------

void forward_vips_log(const gchar* /*domain*/, GLogLevelFlags level, const gchar* message,
                      gpointer /*data*/) {
  // libvips reports decode trouble as GLib warnings on stderr as well as through the error we
  // return; keep stderr for our JSON log lines and the detail at debug level.
  std::string_view text = message != nullptr ? message : "";
  if ((level & G_LOG_LEVEL_CRITICAL) != 0 || (level & G_LOG_LEVEL_ERROR) != 0) {
    log_error("imaging.libvips", {{"detail", text}});
  } else {
    log_debug("imaging.libvips", {{"detail", text}});
  }
}

constexpr const char* kAllowedLoaders[] = {
    "VipsForeignLoadJpeg", "VipsForeignLoadPng",  "VipsForeignLoadWebp",
    "VipsForeignLoadNsgif", "VipsForeignLoadTiff", "VipsForeignLoadHeif",
};

Status init_once(const ImagingOptions& options) {
  if (VIPS_INIT("deeplens") != 0) {
    return Error(ErrorCode::kFailedPrecondition, "libvips failed to initialise")
        .with("detail", take_vips_error());
  }
  vips_cache_set_max(std::max(0, options.cache_max_operations));
  if (options.cache_max_operations <= 0) {
    vips_cache_set_max_mem(0);
    vips_cache_set_max_files(0);
  }
  vips_concurrency_set(std::max(1, options.concurrency));
  if (options.restrict_loaders) {
    vips_operation_block_set("VipsForeignLoad", TRUE);
    for (const char* loader : kAllowedLoaders) vips_operation_block_set(loader, FALSE);
  }
  g_log_set_handler("VIPS",
                    static_cast<GLogLevelFlags>(G_LOG_LEVEL_WARNING | G_LOG_LEVEL_MESSAGE |
                                                G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_INFO),
                    forward_vips_log, nullptr);
  return ok_status();
}

std::once_flag g_init_flag;
Status g_init_status;  // written once under g_init_flag, read-only afterwards

Status ensure_init() { return init_imaging(); }

// ---- loading ----------------------------------------------------------------------------------

struct LoadTuning {
  int jpeg_shrink = 1;          // 1, 2, 4 or 8
  double webp_scale = 1.0;      // <= 1
  bool heif_thumbnail = false;  // the embedded thumbnail instead of the primary image
};

// Loads with the sniffed format's own loader; lazy: only the header is read until pixels are asked
// for. The caller's bytes must outlive the returned image.
Result<ImagePtr> load(ImageFormat format, std::span<const uint8_t> bytes, const LoadTuning& tuning) {
  void* buf = const_cast<uint8_t*>(bytes.data());  // libvips' buffer loaders never write
  const size_t len = bytes.size();
  const VipsAccess access = VIPS_ACCESS_SEQUENTIAL;
  const VipsFailOn fail_on = VIPS_FAIL_ON_ERROR;
  VipsImage* out = nullptr;
  int rc = -1;
  switch (format) {
    case ImageFormat::kJpeg:
      rc = vips_jpegload_buffer(buf, len, &out, "access", access, "fail_on", fail_on, "shrink",
                                tuning.jpeg_shrink, nullptr);
      break;
    case ImageFormat::kPng:
      rc = vips_pngload_buffer(buf, len, &out, "access", access, "fail_on", fail_on, nullptr);
      break;
    case ImageFormat::kWebp:
      rc = vips_webpload_buffer(buf, len, &out, "access", access, "fail_on", fail_on, "scale",
                                tuning.webp_scale, nullptr);
      break;
    case ImageFormat::kGif:
      rc = vips_gifload_buffer(buf, len, &out, "access", access, "fail_on", fail_on, nullptr);
      break;
    case ImageFormat::kTiff:
      rc = vips_tiffload_buffer(buf, len, &out, "access", access, "fail_on", fail_on, nullptr);
      break;
    case ImageFormat::kHeif:
    case ImageFormat::kAvif:
      rc = vips_heifload_buffer(buf, len, &out, "access", access, "fail_on", fail_on, "thumbnail",
                                static_cast<gboolean>(tuning.heif_thumbnail), nullptr);
      break;
    case ImageFormat::kNone:
      return Error(ErrorCode::kInternal, "load() called without a format");
  }
  ImagePtr image(out);
  if (rc != 0 || image == nullptr) {
    return corrupt_error(format, "its header cannot be read", take_vips_error());
  }
  return image;
}

// Dimensions after the EXIF orientation is applied.
std::pair<int, int> oriented_size(const ImageInfo& info) {
  return info.orientation >= 5 ? std::pair{info.height, info.width}
                               : std::pair{info.width, info.height};
}

Status check_pixel_limits(int64_t width, int64_t height, const ImageLimits& limits) {
  // A PNG header declares each side in 32 bits (up to 2^32-1): the product needs 64 unsigned bits.
  const uint64_t pixels = static_cast<uint64_t>(width) * static_cast<uint64_t>(height);
  if (limits.max_pixels < 0 || pixels > static_cast<uint64_t>(limits.max_pixels)) {
    return limit_error("too_many_pixels",
                       "the image is " + std::to_string(width) + "x" + std::to_string(height) +
                           " = " + std::to_string(pixels) + " pixels; the limit is " +
                           std::to_string(limits.max_pixels) + " pixels: upload a smaller image")
        .with("width", std::to_string(width))
        .with("height", std::to_string(height))
        .with("max_pixels", std::to_string(limits.max_pixels));
  }
  const int64_t edge = std::max(width, height);
  if (edge > limits.max_edge) {
    return limit_error("edge_too_long",
                       "the image is " + std::to_string(width) + "x" + std::to_string(height) +
                           "; no side may exceed " + std::to_string(limits.max_edge) +
                           " pixels: upload a smaller image")
        .with("width", std::to_string(width))
        .with("height", std::to_string(height))
        .with("max_edge", std::to_string(limits.max_edge));
  }
  return ok_status();
}

struct Inspected {
  ImageFormat format = ImageFormat::kNone;
  ImageInfo info;
};

// The gate every entry point runs: limits and validation by content, header only.
Status check_byte_limits(int64_t size, const ImageLimits& limits) {
  if (size == 0) {
    return input_error("empty", "the upload is empty (0 bytes): send the image file's contents");
  }
  if (size > limits.max_bytes) {
    return limit_error("too_large", "the upload is " + std::to_string(size) +
                                        " bytes; the limit is " + std::to_string(limits.max_bytes) +
                                        " bytes: upload a smaller file")
        .with("bytes", std::to_string(size))
        .with("max_bytes", std::to_string(limits.max_bytes));
  }
  return ok_status();
}

Result<Inspected> inspect(std::span<const uint8_t> bytes, const ImageLimits& limits) {
  if (Status s = check_byte_limits(static_cast<int64_t>(bytes.size()), limits); !s.ok()) {
    return std::move(s).error();
  }
  const SniffResult sniffed = sniff_image_format(bytes);
  if (sniffed.format == ImageFormat::kNone) {
    if (!sniffed.refused_format.empty()) {
      return input_error("unsupported_format",
                         "the file is a " + std::string(sniffed.refused_format) +
                             " file; accepted formats are " + kAcceptedFormats)
          .with("detected", std::string(sniffed.refused_format));
    }
    if (sniffed.damaged_signature) {
      return input_error("corrupt",
                         "the file starts like an image but its signature is damaged (was it "
                         "transferred as text?); upload the original file");
    }
    return input_error("not_an_image", std::string("the content is not an image (judged by its "
                                                   "bytes, not its name); accepted formats are ") +
                                           kAcceptedFormats);
  }
  const ImageFormat format = sniffed.format;
  if (format == ImageFormat::kPng) {
    // Refuse absurd declared sizes before libpng sees them (it would fail them generically).
    const auto declared = png_declared_size(bytes);
    if (!declared) return corrupt_error(format, "no IHDR header", "");
    if (Status s = check_pixel_limits(declared->width, declared->height, limits); !s.ok()) {
      return std::move(s).error().with("format", "PNG");
    }
    // Every chunk must lie within the bytes before libpng sees them: it allocates and zeroes a
    // chunk's declared length before reading it, so 300 bytes declaring a 2 GB tEXt chunk would
    // cost 2 GB of memory per upload.
    if (auto problem = find_structural_problem(format, bytes)) {
      return corrupt_error(format, *problem, "");
    }
  }
  auto header = load(format, bytes, LoadTuning{});
  if (!header.ok()) return std::move(header).error();
  VipsImage* image = header->get();

  Inspected out;
  out.format = format;
  ImageInfo& info = out.info;
  info.width = vips_image_get_width(image);
  info.height = vips_image_get_height(image);
  if (info.width <= 0 || info.height <= 0) {
    return corrupt_error(format, "its header declares no pixels", "");
  }
  if (Status s = check_pixel_limits(info.width, info.height, limits); !s.ok()) {
    return std::move(s).error().with("format", std::string(format_name(format)));
  }
  if (auto problem = find_structural_problem(format, bytes)) {
    return corrupt_error(format, *problem, "");
  }
  if (format == ImageFormat::kHeif || format == ImageFormat::kAvif) {
    // The coded payload decides; the brands only suggest it.
    const char* compression = nullptr;
    if (vips_image_get_typeof(image, "heif-compression") != 0 &&
        vips_image_get_string(image, "heif-compression", &compression) == 0 &&
        compression != nullptr) {
      std::string_view c(compression);
      if (c == "av1") out.format = ImageFormat::kAvif;
      if (c == "hevc") out.format = ImageFormat::kHeif;
    }
  }
  info.format = std::string(format_name(out.format));
  info.content_type = std::string(format_content_type(out.format));
  info.extension = std::string(format_extension(out.format));
  const char* nick = vips_enum_nick(VIPS_TYPE_INTERPRETATION, vips_image_get_interpretation(image));
  info.color_profile = nick != nullptr ? nick : "unknown";
  std::transform(info.color_profile.begin(), info.color_profile.end(), info.color_profile.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  int orientation = 1;
  if (vips_image_get_typeof(image, VIPS_META_ORIENTATION) != 0 &&
      vips_image_get_int(image, VIPS_META_ORIENTATION, &orientation) == 0 && orientation >= 1 &&
      orientation <= 8) {
    info.orientation = orientation;
  }
  info.has_alpha = vips_image_hasalpha(image) != 0;
  return out;
}

// Shrink-on-load for a result of at least target_w x target_h (after orientation): decode just
// big enough that the final resample still has a factor of 2 or more to antialias with, the rule
// vips_thumbnail uses.
LoadTuning shrink_on_load(const Inspected& in, std::span<const uint8_t> bytes, double target_w,
                          double target_h, bool fit_inside) {
  LoadTuning tuning;
  auto [w, h] = oriented_size(in.info);
  const double hshrink = w / target_w;
  const double vshrink = h / target_h;
  // Forced size: each axis must keep at least its own target. Fit-inside: the binding axis.
  const double shrink = fit_inside ? std::max(hshrink, vshrink) : std::min(hshrink, vshrink);
  switch (in.format) {
    case ImageFormat::kJpeg:
      tuning.jpeg_shrink = shrink >= 16 ? 8 : shrink >= 8 ? 4 : shrink >= 4 ? 2 : 1;
      break;
    case ImageFormat::kWebp:
      if (shrink >= 4) tuning.webp_scale = 2.0 / shrink;
      break;
    case ImageFormat::kHeif:
    case ImageFormat::kAvif: {
      // Phones embed a ~320 px thumbnail; use it when it is big enough and the same shape.
      auto thumb = load(in.format, bytes, LoadTuning{.heif_thumbnail = true});
      if (thumb.ok()) {
        const double tw = vips_image_get_width(thumb->get());
        const double th = vips_image_get_height(thumb->get());
        const bool smaller = tw < in.info.width;
        const bool same_shape =
            std::abs(tw / th - static_cast<double>(in.info.width) / in.info.height) < 0.01;
        const bool swap = in.info.orientation >= 5;
        const double ow = swap ? th : tw;
        const double oh = swap ? tw : th;
        const bool big_enough = fit_inside ? std::max(ow, oh) >= std::max(target_w, target_h)
                                           : ow >= target_w && oh >= target_h;
        tuning.heif_thumbnail = smaller && same_shape && big_enough;
      }
      break;
    }
    default:
      break;
  }
  return tuning;
}

// Applies op to image, replacing it; on failure a "corrupt" error carrying the libvips message.
template <typename Op>
Status apply(ImagePtr& image, ImageFormat format, const char* step, Op op) {
  VipsImage* out = nullptr;
  if (op(image.get(), &out) != 0 || out == nullptr) {
    if (out != nullptr) g_object_unref(out);
    return corrupt_error(format, std::string("decoding failed at ") + step, take_vips_error());
  }
  image.reset(out);
  return ok_status();
}

// To 8-bit sRGB: 3 bands, or 4 with alpha kept when !flatten_alpha.
Status to_srgb8(ImagePtr& image, ImageFormat format, bool flatten_alpha) {
  if (flatten_alpha && vips_image_hasalpha(image.get())) {
    const VipsBandFormat band_format = vips_image_get_format(image.get());
    const double max_alpha = band_format == VIPS_FORMAT_USHORT ? 65535.0
                             : band_format == VIPS_FORMAT_FLOAT || band_format == VIPS_FORMAT_DOUBLE
                                 ? (vips_image_get_interpretation(image.get()) ==
                                            VIPS_INTERPRETATION_scRGB
                                        ? 1.0
                                        : 255.0)
                                 : 255.0;
    const int colour_bands = vips_image_get_bands(image.get()) - 1;
    std::vector<double> white(static_cast<size_t>(std::max(colour_bands, 1)), max_alpha);
    VipsArrayDouble* background = vips_array_double_new(white.data(), static_cast<int>(white.size()));
    Status s = apply(image, format, "alpha flattening", [&](VipsImage* in, VipsImage** out) {
      return vips_flatten(in, out, "background", background, "max_alpha", max_alpha, nullptr);
    });
    vips_area_unref(VIPS_AREA(background));
    if (!s.ok()) return s;
  }
  if (vips_image_get_interpretation(image.get()) != VIPS_INTERPRETATION_sRGB ||
      vips_image_get_format(image.get()) != VIPS_FORMAT_UCHAR) {
    Status s = apply(image, format, "colour conversion", [](VipsImage* in, VipsImage** out) {
      return vips_colourspace(in, out, VIPS_INTERPRETATION_sRGB, nullptr);
    });
    if (!s.ok()) return s;
  }
  const int bands = vips_image_get_bands(image.get());
  const int wanted = (!flatten_alpha && vips_image_hasalpha(image.get())) ? 4 : 3;
  if (bands > wanted) {
    Status s = apply(image, format, "band selection", [&](VipsImage* in, VipsImage** out) {
      return vips_extract_band(in, out, 0, "n", wanted, nullptr);
    });
    if (!s.ok()) return s;
  } else if (bands < 3) {  // a grey image libvips left as one band
    Status s = apply(image, format, "band expansion", [](VipsImage* in, VipsImage** out) {
      return vips_bandjoin_const1(in, out, 0, nullptr) == 0 ? 0 : -1;
    });
    if (!s.ok()) return s;
  }
  if (vips_image_get_format(image.get()) != VIPS_FORMAT_UCHAR) {
    Status s = apply(image, format, "8-bit conversion", [](VipsImage* in, VipsImage** out) {
      return vips_cast_uchar(in, out, nullptr);
    });
    if (!s.ok()) return s;
  }
  return ok_status();
}

// A copy of the image without metadata (EXIF, XMP, IPTC, ICC, orientation, comments ...). The
// savers' own "strip" is not enough: libvips 8.14's webpsave ignores it and would write the
// original EXIF (camera, GPS, ...) into the thumbnail. Even stripped, that webpsave still writes
// a small EXIF block it generates itself (resolution, pixel size, orientation 1): harmless.
Status strip_metadata(ImagePtr& image, ImageFormat format) {
  Status s = apply(image, format, "metadata removal", [](VipsImage* in, VipsImage** out) {
    return vips_copy(in, out, nullptr);
  });
  if (!s.ok()) return s;
  static constexpr std::string_view kKeep[] = {"width",  "height",  "bands",   "format",
                                               "coding", "interpretation", "xoffset", "yoffset",
                                               "xres",   "yres",    "filename"};
  gchar** fields = vips_image_get_fields(image.get());
  for (gchar** field = fields; field != nullptr && *field != nullptr; ++field) {
    const std::string_view name(*field);
    if (std::find(std::begin(kKeep), std::end(kKeep), name) == std::end(kKeep)) {
      vips_image_remove(image.get(), *field);
    }
  }
  g_strfreev(fields);
  return ok_status();
}

// Load (with shrink-on-load) and resample to the target box, oriented and colour managed.
Result<ImagePtr> load_resampled(const Inspected& in, std::span<const uint8_t> bytes, int width,
                                int height, VipsSize size) {
  const bool fit_inside = size != VIPS_SIZE_FORCE;
  auto loaded = load(in.format, bytes, shrink_on_load(in, bytes, width, height, fit_inside));
  if (!loaded.ok()) return std::move(loaded).error();
  ImagePtr image = std::move(loaded).value();
  // Colour management only for images that embed a profile (Display P3 phone photos, Adobe RGB):
  // those are transformed to sRGB. Untagged images are sRGB by convention and stay untouched (an
  // export profile on them would nudge every colour through lcms for nothing); CMYK without a
  // profile gets libvips' built-in CMYK profile either way.
  const bool tagged = vips_image_get_typeof(image.get(), VIPS_META_ICC_NAME) != 0;
  Status s = apply(image, in.format, "resampling", [&](VipsImage* src, VipsImage** out) {
    return tagged ? vips_thumbnail_image(src, out, width, "height", height, "size", size,
                                         "export_profile", "srgb", "intent",
                                         VIPS_INTENT_RELATIVE, nullptr)
                  : vips_thumbnail_image(src, out, width, "height", height, "size", size, nullptr);
  });
  if (!s.ok()) return std::move(s).error();
  return image;
}

// Runs the pipeline into memory; this is where pixels are decoded and decode errors surface.
Result<std::vector<uint8_t>> render(VipsImage* image, ImageFormat format) {
  size_t size = 0;
  void* pixels = vips_image_write_to_memory(image, &size);
  if (pixels == nullptr) return corrupt_error(format, "the pixel data cannot be decoded", take_vips_error());
  std::vector<uint8_t> out(static_cast<const uint8_t*>(pixels),
                           static_cast<const uint8_t*>(pixels) + size);
  g_free(pixels);
  return out;
}

Status check_output_size(const char* name, int value) {
  if (value < 1 || value > kMaxOutputEdge) {
    return Error(ErrorCode::kInvalidArgument, std::string(name) + " must be 1.." +
                                                  std::to_string(kMaxOutputEdge) + ", got " +
                                                  std::to_string(value))
        .with("argument", name);
  }
  return ok_status();
}

// A read-only mapping of a whole file, unmapped on destruction.
class MappedFile {
 public:
  MappedFile() = default;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() {
    if (data_ != nullptr) munmap(data_, size_);
  }
  Status map(int fd, size_t size) {
    void* p = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      return Error(ErrorCode::kIoError, "cannot map the file: " + std::string(std::strerror(errno)))
          .with("errno", std::to_string(errno));
    }
    data_ = p;
    size_ = size;
    return ok_status();
  }
  std::span<const uint8_t> bytes() const { return {static_cast<const uint8_t*>(data_), size_}; }

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
};

class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

Status init_imaging(const ImagingOptions& options) {
  std::call_once(g_init_flag, [&] { g_init_status = init_once(options); });
  return g_init_status;
}

Status init_imaging() { return init_imaging(ImagingOptions{}); }

std::vector<std::string> supported_formats() {
  if (!ensure_init().ok()) return {};
  std::vector<std::string> out;
  for (auto [format, loader] : {std::pair{"JPEG", "jpegload_buffer"}, {"PNG", "pngload_buffer"},
                                {"WEBP", "webpload_buffer"}, {"GIF", "gifload_buffer"},
                                {"TIFF", "tiffload_buffer"}, {"HEIF", "heifload_buffer"},
                                {"AVIF", "heifload_buffer"}}) {
    if (vips_type_find("VipsOperation", loader) != 0) out.emplace_back(format);
  }
  return out;
}

Result<ImageInfo> probe_buffer(std::span<const uint8_t> bytes, const ImageLimits& limits) {
  if (Status s = ensure_init(); !s.ok()) return std::move(s).error();
  auto inspected = inspect(bytes, limits);
  if (!inspected.ok()) return std::move(inspected).error();
  return std::move(inspected->info);
}

Result<ImageInfo> probe_file(const std::filesystem::path& path, const ImageLimits& limits) {
  if (Status s = ensure_init(); !s.ok()) return std::move(s).error();
  FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    const int err = errno;
    return Error(err == ENOENT ? ErrorCode::kNotFound : ErrorCode::kIoError,
                 "cannot open the image file: " + std::string(std::strerror(err)))
        .with("path", path.string())
        .with("errno", std::to_string(err));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return Error(ErrorCode::kIoError, "the image path is not a readable regular file")
        .with("path", path.string());
  }
  const int64_t size = st.st_size;
  // Limits that need no bytes come before mapping anything.
  if (Status s = check_byte_limits(size, limits); !s.ok()) {
    return std::move(s).error().with("path", path.string());
  }
  MappedFile mapped;
  if (Status s = mapped.map(fd.get(), static_cast<size_t>(size)); !s.ok()) {
    return std::move(s).error().with("path", path.string());
  }
  auto inspected = inspect(mapped.bytes(), limits);
  if (!inspected.ok()) return std::move(inspected).error().with("path", path.string());
  return std::move(inspected->info);
}

Result<DecodedImage> decode_for_model(std::span<const uint8_t> bytes, int width, int height,
                                      const ImageLimits& limits) {
  if (Status s = ensure_init(); !s.ok()) return std::move(s).error();
  if (Status s = check_output_size("width", width); !s.ok()) return std::move(s).error();
  if (Status s = check_output_size("height", height); !s.ok()) return std::move(s).error();
  auto inspected = inspect(bytes, limits);
  if (!inspected.ok()) return std::move(inspected).error();

  auto resampled = load_resampled(*inspected, bytes, width, height, VIPS_SIZE_FORCE);
  if (!resampled.ok()) return std::move(resampled).error();
  ImagePtr image = std::move(resampled).value();
  if (Status s = to_srgb8(image, inspected->format, /*flatten_alpha=*/true); !s.ok()) {
    return std::move(s).error();
  }
  if (vips_image_get_width(image.get()) != width || vips_image_get_height(image.get()) != height ||
      vips_image_get_bands(image.get()) != 3) {
    return Error(ErrorCode::kInternal, "libvips resampled to an unexpected shape")
        .with("width", std::to_string(vips_image_get_width(image.get())))
        .with("height", std::to_string(vips_image_get_height(image.get())))
        .with("bands", std::to_string(vips_image_get_bands(image.get())));
  }
  auto pixels = render(image.get(), inspected->format);
  if (!pixels.ok()) return std::move(pixels).error();
  DecodedImage out;
  out.width = width;
  out.height = height;
  out.rgb = std::move(pixels).value();
  return out;
}

Result<std::vector<uint8_t>> make_thumbnail(std::span<const uint8_t> bytes, int long_edge,
                                            ThumbnailFormat format, const ImageLimits& limits) {
  if (Status s = ensure_init(); !s.ok()) return std::move(s).error();
  if (Status s = check_output_size("long_edge", long_edge); !s.ok()) return std::move(s).error();
  auto inspected = inspect(bytes, limits);
  if (!inspected.ok()) return std::move(inspected).error();

  auto resampled = load_resampled(*inspected, bytes, long_edge, long_edge, VIPS_SIZE_DOWN);
  if (!resampled.ok()) return std::move(resampled).error();
  ImagePtr image = std::move(resampled).value();
  const bool jpeg = format == ThumbnailFormat::kJpeg;
  if (Status s = to_srgb8(image, inspected->format, /*flatten_alpha=*/jpeg); !s.ok()) {
    return std::move(s).error();
  }
  if (Status s = strip_metadata(image, inspected->format); !s.ok()) return std::move(s).error();
  void* encoded = nullptr;
  size_t length = 0;
  const int rc =
      jpeg ? vips_jpegsave_buffer(image.get(), &encoded, &length, "Q", 80, "strip", TRUE,
                                  "optimize_coding", TRUE, nullptr)
           : vips_webpsave_buffer(image.get(), &encoded, &length, "Q", 80, "strip", TRUE, nullptr);
  if (rc != 0 || encoded == nullptr) {
    return corrupt_error(inspected->format, "the pixel data cannot be decoded", take_vips_error());
  }
  std::vector<uint8_t> out(static_cast<const uint8_t*>(encoded),
                           static_cast<const uint8_t*>(encoded) + length);
  g_free(encoded);
  return out;
}

}  // namespace deeplens
