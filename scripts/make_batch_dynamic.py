#!/usr/bin/env python3
"""Make the first (batch) dimension of an ONNX model's inputs and outputs symbolic.

Usage: make_batch_dynamic.py IN.onnx OUT.onnx

Used once at setup on models exported with a batch of 1 (MODELS.md). Besides the
graph's inputs and outputs, a Reshape whose constant target shape starts with 1 is
rewritten to start with 0 ("copy the input's dimension"), and stale intermediate
shape annotations are dropped so that ONNX Runtime infers them again.
"""
import sys

import numpy as np
import onnx
from onnx import numpy_helper


def main(src, dst):
    model = onnx.load(src)
    g = model.graph
    for v in list(g.input) + list(g.output):
        dims = v.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "N"
    del g.value_info[:]
    consts = {i.name: i for i in g.initializer}
    const_nodes = {n.output[0]: n for n in g.node if n.op_type == "Constant"}
    for n in g.node:
        if n.op_type != "Reshape" or len(n.input) < 2:
            continue
        name = n.input[1]
        if name in consts:
            arr = numpy_helper.to_array(consts[name])
            if arr.ndim == 1 and arr.size >= 1 and arr[0] == 1:
                arr = arr.copy()
                arr[0] = 0
                consts[name].CopyFrom(numpy_helper.from_array(arr.astype(np.int64), name))
        elif name in const_nodes:
            attr = const_nodes[name].attribute[0]
            arr = numpy_helper.to_array(attr.t)
            if arr.ndim == 1 and arr.size >= 1 and arr[0] == 1:
                arr = arr.copy()
                arr[0] = 0
                attr.t.CopyFrom(numpy_helper.from_array(arr.astype(np.int64)))
    onnx.checker.check_model(model)
    onnx.save(model, dst)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
