// An Extractor that runs a model file in-process with OpenCV DNN: ONNX (ResNet-50 ...),
// TensorFlow GraphDef .pb (the MobileNets in ../shared/models), Caffe, Darknet, Torch.
// Everything about the model comes from its ModelSpec (model_spec.h); no code knows a model.
//
// Per extract() call: the batch's RGB8 pixels (already at input_width x input_height) become one
// NCHW float blob, ((pixel - mean) * scale) / std per channel, R and B swapped for channel_order
// "bgr"; one forward() of output_layer; each image's output flattened to `dimension` floats and
// L2-normalised when `normalize`. Batches larger than batch_size run as several forwards.
//
// Loading checks the model before it serves anything: the file loads, the output layer exists,
// one image gives exactly `dimension` values, and a batch of two gives the same vectors as two
// single images (a model exported with a fixed batch of 1 is then run one image per forward).
//
// Thread-safety: extract() may be called from any number of threads. Blobs are prepared in the
// calling thread; forward() is serialised by a mutex because cv::dnn::Net is not thread-safe.
// Parallelism inside a forward comes from OpenCV's own thread pool (ModelSpec::threads, which
// is process-wide).
//
// OpenCV stays out of this header so that including it costs nothing.
#pragma once

#include <memory>

#include "common/result.h"
#include "features/extractor.h"
#include "features/model_spec.h"

namespace deeplens {

// Loads spec.file (and spec.config_file) once. Errors: kInvalidArgument for a spec that is not
// kind "dnn", kNotFound for a missing file, kInvalidArgument for a file OpenCV cannot load, a
// missing output layer or a dimension that does not match the model (context: model, file).
// Relative paths are taken as they are (relative to the working directory); app/ resolves them.
Result<std::unique_ptr<Extractor>> make_dnn_extractor(const ModelSpec& spec);

}  // namespace deeplens
