#!/usr/bin/python3
"""Writes the small ONNX models the DNN extractor tests load through configuration alone.

Run with Debian's interpreter (python3-onnx, python3-numpy):  /usr/bin/python3 make_onnx_models.py OUTDIR

  resnet_like.onnx         input [N,3,224,224] (dynamic batch) -> Conv 7x7/2 -> Relu -> residual 3x3
                           block -> GlobalAveragePool -> Flatten -> Gemm -> "embedding" [N,2048]
                           (the shape of a ResNet-50 feature extractor, with random weights, seed 0)
  resnet_fixed_batch.onnx  the same graph exported with batch fixed to 1 and a Reshape to [1,-1]
                           (a model that cannot batch: the extractor must run it one image at a time)
  channel_probe.onnx       input [N,3,2,2] -> GlobalAveragePool -> Flatten -> "means" [N,3]: shows
                           exactly what preprocessing (mean, scale, std, channel order) fed the model
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 11


def tensor(name, array):
    return numpy_helper.from_array(array.astype(np.float32), name)


def resnet_like(fixed_batch):
    rng = np.random.default_rng(0)
    batch = 1 if fixed_batch else "N"
    inits = [
        tensor("conv1_w", rng.normal(0, 0.05, (32, 3, 7, 7))),
        tensor("conv1_b", rng.normal(0, 0.05, (32,))),
        tensor("conv2_w", rng.normal(0, 0.05, (32, 32, 3, 3))),
        tensor("conv2_b", rng.normal(0, 0.05, (32,))),
        tensor("fc_w", rng.normal(0, 0.2, (2048, 32))),  # [out, in] as PyTorch exports it
        tensor("fc_b", rng.normal(0, 0.2, (2048,))),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv1_w", "conv1_b"], ["c1"], kernel_shape=[7, 7],
                         strides=[2, 2], pads=[3, 3, 3, 3]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "conv2_w", "conv2_b"], ["c2"], kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r1"], ["sum"]),
        helper.make_node("Relu", ["sum"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["pool"]),
    ]
    if fixed_batch:
        inits.append(numpy_helper.from_array(np.array([1, -1], dtype=np.int64), "flat_shape"))
        nodes.append(helper.make_node("Reshape", ["pool", "flat_shape"], ["flat"]))
    else:
        nodes.append(helper.make_node("Flatten", ["pool"], ["flat"], axis=1))
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["embedding"], transB=1))
    graph = helper.make_graph(
        nodes, "resnet_like",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 224, 224])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [batch, 2048])],
        inits)
    return graph


def channel_probe():
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["means"], axis=1),
    ]
    return helper.make_graph(
        nodes, "channel_probe",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 2, 2])],
        [helper.make_tensor_value_info("means", TensorProto.FLOAT, ["N", 3])])


def save(graph, path):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="deeplens-tests")
    model.ir_version = 7
    onnx.checker.check_model(model)
    onnx.save(model, path)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    save(resnet_like(False), os.path.join(out, "resnet_like.onnx"))
    save(resnet_like(True), os.path.join(out, "resnet_fixed_batch.onnx"))
    save(channel_probe(), os.path.join(out, "channel_probe.onnx"))


if __name__ == "__main__":
    main()
