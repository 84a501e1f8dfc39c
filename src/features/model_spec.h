// ModelSpec: one [[models]] table of the configuration file, validated. It says which kind of
// extractor serves a model name and how to feed it; app/models.cc turns each spec into an
// Extractor and a ModelRegistry entry.
//
//   [[models]]
//   name = "mobilenet_v2"
//   kind = "dnn"
//   file = "/srv/models/mobilenet_v2_1.0_224_quint8.pb"
//   output_layer = "embedding"
//   dimension = 1280
//   mean = 127.5
//   scale = "0.00784313725490196"   # 1/127.5; a string keeps every digit (see `scale`)
//
// A ModelSpec is a plain value: safe to copy, not synchronised.
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <string_view>

#include "common/config.h"
#include "common/result.h"

namespace deeplens {

enum class ModelKind {
  kDnn,      // a model file run in-process by OpenCV DNN (ONNX, TensorFlow .pb, Caffe, Darknet ...)
  kRemote,   // an HTTP extraction service: POST {url}/extract-features
  kBuiltin,  // the built-in descriptor (no model file; always available as "builtin")
};

// Channel order of the model's input tensor. Decoded pixels are always RGB; "bgr" swaps R and B.
enum class ChannelOrder { kRgb, kBgr };

// "dnn" / "remote" / "builtin" and "rgb" / "bgr", as written in the configuration.
const char* model_kind_name(ModelKind kind);
const char* channel_order_name(ChannelOrder order);

struct ModelSpec {
  // Key `name` (required, except for kind "builtin" where it defaults to and must be "builtin";
  // other kinds may not use "builtin"). The name requests use; part of collection names, so 1-64
  // characters of [a-z0-9_-] (lower case).
  std::string name;

  // Key `kind`: "dnn" | "remote" | "builtin". Default "dnn".
  ModelKind kind = ModelKind::kDnn;

  // Key `version` (dnn, remote): carried in events as modelVersion. Default "1.0". The built-in
  // descriptor has its own.
  std::string version = "1.0";

  // Key `default`: this model serves requests that name no model. Default false; when no entry
  // sets it, the first [[models]] entry is the default, and "builtin" when there are none.
  // At most one entry may set it.
  bool is_default = false;

  // Key `batch_size`: the most images one extract() call sends to the model at once (larger
  // batches are split). Default 8; 1..256.
  int batch_size = 8;

  // Key `normalize` (dnn, remote): L2-normalise every vector (cosine similarity == dot product).
  // Default true.
  bool normalize = true;

  // Key `duplicate_threshold`: an image whose nearest neighbour in the tenant's collection of this
  // model scores at least this (cosine) is reported as a near-duplicate of it (`duplicateOf`).
  // 0 = no near-duplicate check for this model. Default default_duplicate_threshold(kind).
  double duplicate_threshold = 0.0;

  // Key `dimension`: length of every vector; required for "dnn" and "remote" and checked
  // against the model's real output. For "builtin", 0 (default) accepts the descriptor's own.
  int dimension = 0;

  // ---- kind = "dnn" only ----

  // Key `file` (required): the model file, read by cv::dnn::readNet (format from the extension:
  // .onnx, .pb, .caffemodel (+ `config_file`), .weights (+ .cfg), .t7, .xml (OpenVINO)).
  // A relative path is resolved against the registry's base directory (the config file's folder).
  std::string file;

  // Key `config_file`: the second file some formats need (Caffe .prototxt, Darknet .cfg,
  // TF .pbtxt); resolved like `file`. Default "" (none).
  std::string config_file;

  // Keys `input_width`, `input_height`: the pixel size the model takes; images are decoded to
  // exactly this size (aspect ratio not preserved). Default 224 x 224; 1..4096.
  int input_width = 224;
  int input_height = 224;

  // Key `mean`: subtracted from each channel of the 0..255 pixel values, in the model's channel
  // order. One number for all channels, or three as a comma-separated string ("123.675,116.28,
  // 103.53") or an array of strings. Default 0,0,0.
  std::array<double, 3> mean = {0.0, 0.0, 0.0};

  // Key `scale`: multiplies (pixel - mean). Default 1.0. E.g. 1/127.5 maps 0..255 to -1..1.
  // (The config loader keeps 6 decimals of a TOML float; write more precise values as a string,
  // scale = "0.00784313725490196".)
  double scale = 1.0;

  // Key `std`: divides each channel after scaling, in the model's channel order (torchvision
  // style models: mean 123.675,116.28,103.53, scale 1, std 58.395,57.12,57.375). Same forms as
  // `mean`. Default 1,1,1.
  std::array<double, 3> std = {1.0, 1.0, 1.0};

  // Key `channel_order`: "rgb" | "bgr", the order the model expects. Default "rgb".
  ChannelOrder channel_order = ChannelOrder::kRgb;

  // Key `output_layer`: the layer whose output is the vector (e.g. "embedding"). Default "": the
  // network's only output (an error naming the outputs when it has several).
  std::string output_layer;

  // Key `threads`: OpenCV's worker-thread count (cv::setNumThreads). NOTE: OpenCV keeps this
  // process-wide, so it applies to every DNN model and OpenCV call in the process; the last model
  // loaded wins. Default 0: leave OpenCV's default (one per core).
  int threads = 0;

  // ---- kind = "remote" only ----

  // Key `url` (required): base URL of the extraction service, http:// or https://; requests go
  // to {url}/extract-features.
  std::string url;

  // Key `timeout_ms`: the whole request's deadline (connect + upload + answer). Default 30000;
  // 1..600000.
  int timeout_ms = 30000;

  bool swap_rb() const { return channel_order == ChannelOrder::kBgr; }
};

// Validates one [[models]] table (as Config::sections("models") returns it: key -> text).
// `index` is the table's position in the file and names it in errors, e.g.
// "models[1].dimension: expected an integer, got 'abc'" (context: key = "models[1].dimension").
// Unknown keys, and keys that do not apply to the model's kind, are errors.
Result<ModelSpec> parse_model_spec(const ConfigSection& section, size_t index = 0);

// The `duplicate_threshold` of a model of this kind that sets none.
double default_duplicate_threshold(ModelKind kind);

}  // namespace deeplens
