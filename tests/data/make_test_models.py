#!/usr/bin/python3
"""Generates the small synthetic ONNX models used by the unit tests (onnx + numpy only).

Run with the system Python (python3-onnx):  /usr/bin/python3 tests/data/make_test_models.py
Writes into tests/data/models/ next to this script; running it again rewrites the same bytes.

models/scrfd_synth/      an InsightFace-style pack: SCRFD-like detector + embedder
  scrfd.onnx             input "input.1" [1,3,64,64]; 9 outputs in SCRFD export order
                         (scores 8/16/32 [A,1], bbox 8/16/32 [A,4], kps 8/16/32 [A,10]), named
                         like det_10g's. A = (64/stride)^2 * 2 anchors: 128, 32, 8. The outputs
                         are constants (the input is consumed as 0 * mean(input)).
  embed.onnx             input "input.1" [N,3,112,112] -> GlobalAveragePool -> Flatten ->
                         MatMul (fixed seeded 3x512 matrix) -> "embedding" [N,512]; N symbolic.
  expected.json          the two detections below, hand-computed.
models/detector_only/    scrfd.onnx alone (a pack without an embedder: an error)
models/unknown_only/     unknown.onnx: [1,3,50,70] -> Relu (no known signature: an error)
models/misc/int_output.onnx   [N,4] float -> Cast -> int64 output (fw_model_run refuses it)

Anchor layout (SCRFD): on the (64/s) x (64/s) grid of stride s, location (x, y) has anchors
a = 0, 1, both centred at (x*s, y*s); the row index is (y * (64/s) + x) * 2 + a. A box is
(cx - l*s, cy - t*s, cx + r*s, cy + b*s) and keypoint k is (cx + dx_k*s, cy + dy_k*s).

Every score is 0.01 (bbox distances 1, keypoints 0) except two anchors:

  1. stride 8, (x=2, y=3), anchor 0 -> row (3*8+2)*2+0 = 52; centre (16, 24); score 0.9
     distances (l,t,r,b) = (1, 2, 3, 4)
       box = (16-8, 24-16, 16+24, 24+32) = (8, 8, 40, 56)
     kps (dx,dy) = (-0.5,-0.5) (1.5,-0.5) (0.5,0.5) (-0.25,2) (1.25,2)
       -> (12,20) (28,20) (20,28) (14,40) (26,40)

  2. stride 16, (x=3, y=1), anchor 1 -> row (1*4+3)*2+1 = 15; centre (48, 16); score 0.8
     distances (l,t,r,b) = (0.25, 0.5, 0.75, 1)
       box = (48-4, 16-8, 48+12, 16+16) = (44, 8, 60, 32)   (x1 44 > 40: no overlap with 1)
     kps (dx,dy) = (-0.125,-0.25) (0.5,-0.25) (0.25,0.25) (0,0.75) (0.5,0.75)
       -> (46,12) (56,12) (52,20) (48,28) (56,28)

All values are exact in float32, so decoded results can be compared tightly.
"""

import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
IR_VERSION = 7
PRODUCER = "facework tests/data/make_test_models.py"

IN_SIZE = 64
STRIDES = (8, 16, 32)
ANCHORS = 2
# det_10g's output names, in its order: scores 8/16/32, bbox 8/16/32, kps 8/16/32.
SCORE_NAMES = ("448", "471", "494")
BBOX_NAMES = ("451", "474", "497")
KPS_NAMES = ("454", "477", "500")

DETECTIONS = [
    {
        "stride": 8, "x": 2, "y": 3, "anchor": 0, "score": 0.9,
        "distances": [1.0, 2.0, 3.0, 4.0],
        "kps_d": [[-0.5, -0.5], [1.5, -0.5], [0.5, 0.5], [-0.25, 2.0], [1.25, 2.0]],
        # hand-computed (see the docstring)
        "row": 52, "box": [8.0, 8.0, 40.0, 56.0],
        "kps": [[12.0, 20.0], [28.0, 20.0], [20.0, 28.0], [14.0, 40.0], [26.0, 40.0]],
    },
    {
        "stride": 16, "x": 3, "y": 1, "anchor": 1, "score": 0.8,
        "distances": [0.25, 0.5, 0.75, 1.0],
        "kps_d": [[-0.125, -0.25], [0.5, -0.25], [0.25, 0.25], [0.0, 0.75], [0.5, 0.75]],
        "row": 15, "box": [44.0, 8.0, 60.0, 32.0],
        "kps": [[46.0, 12.0], [56.0, 12.0], [52.0, 20.0], [48.0, 28.0], [56.0, 28.0]],
    },
]
BASE_SCORE = 0.01
BASE_DISTANCE = 1.0


def check_expected():
    """Recomputes the hand-computed rows, boxes and keypoints from the definitions."""
    for d in DETECTIONS:
        s, g = d["stride"], IN_SIZE // d["stride"]
        assert d["row"] == (d["y"] * g + d["x"]) * ANCHORS + d["anchor"]
        cx, cy = d["x"] * s, d["y"] * s
        l, t, r, b = d["distances"]
        assert d["box"] == [cx - l * s, cy - t * s, cx + r * s, cy + b * s], d
        assert d["kps"] == [[cx + dx * s, cy + dy * s] for dx, dy in d["kps_d"]], d
    a, b = DETECTIONS[0]["box"], DETECTIONS[1]["box"]
    assert a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1], "boxes overlap"


def make_model(graph):
    model = helper.make_model(graph, producer_name=PRODUCER,
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    model.model_version = 1
    onnx.checker.check_model(model)
    return model


def save(model, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(model.SerializeToString(deterministic=True))


def i64(name, values):
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def f32(name, values):
    return numpy_helper.from_array(np.array(values, dtype=np.float32), name)


def scrfd_model():
    """The synthetic detector: each output = fill + 0*mean(input), then ScatterND puts the
    two confident anchors in place (keeps the file tiny: no dense constant tensors)."""
    nodes, inits, outputs = [], [f32("zero_f", 0.0)], []
    nodes.append(helper.make_node("ReduceMean", ["input.1"], ["mean"], keepdims=0))
    nodes.append(helper.make_node("Mul", ["mean", "zero_f"], ["zero"]))

    def output(name, level, cols, fill, special):
        rows = (IN_SIZE // STRIDES[level]) ** 2 * ANCHORS
        shape = f"shape_{name}"
        inits.append(i64(shape, [rows, cols]))
        value = helper.make_tensor(f"fill_{name}", TensorProto.FLOAT, [1], [fill])
        nodes.append(helper.make_node("ConstantOfShape", [shape], [f"c_{name}"], value=value))
        target = name if not special else f"b_{name}"
        nodes.append(helper.make_node("Add", [f"c_{name}", "zero"], [target]))
        if special:
            idx = [[row] for row, _ in special]
            upd = [vals for _, vals in special]
            inits.append(i64(f"idx_{name}", idx))
            inits.append(f32(f"upd_{name}", upd))
            nodes.append(helper.make_node("ScatterND", [target, f"idx_{name}", f"upd_{name}"],
                                          [name]))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [rows, cols]))

    def specials(level, values):
        return [(d["row"], values(d)) for d in DETECTIONS if d["stride"] == STRIDES[level]]

    for level in range(3):
        output(SCORE_NAMES[level], level, 1, BASE_SCORE, specials(level, lambda d: [d["score"]]))
    for level in range(3):
        output(BBOX_NAMES[level], level, 4, BASE_DISTANCE,
               specials(level, lambda d: d["distances"]))
    for level in range(3):
        output(KPS_NAMES[level], level, 10, 0.0,
               specials(level, lambda d: [v for p in d["kps_d"] for v in p]))

    inp = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, IN_SIZE, IN_SIZE])
    graph = helper.make_graph(nodes, "scrfd_synth", [inp], outputs, inits)
    return make_model(graph)


def embed_model():
    w = np.random.RandomState(20261126).standard_normal((3, 512)).astype(np.float32)
    nodes = [
        helper.make_node("GlobalAveragePool", ["input.1"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w"], ["embedding"]),
    ]
    inp = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 112, 112])
    out = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 512])
    graph = helper.make_graph(nodes, "embed_synth", [inp], [out],
                              [numpy_helper.from_array(w, "w")])
    return make_model(graph)


def unknown_model():
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 50, 70])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 50, 70])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "unknown", [inp], [out])
    return make_model(graph)


def int_output_model():
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    out = helper.make_tensor_value_info("y", TensorProto.INT64, ["N", 4])
    node = helper.make_node("Cast", ["x"], ["y"], to=TensorProto.INT64)
    graph = helper.make_graph([node], "int_output", [inp], [out])
    return make_model(graph)


def expected_json():
    return {
        "comment": "Hand-computed decoding of scrfd.onnx (see make_test_models.py): boxes "
                   "and keypoints in 64x64 input pixels, x1,y1,x2,y2.",
        "input_size": [IN_SIZE, IN_SIZE],
        "strides": list(STRIDES),
        "anchors": ANCHORS,
        "base_score": BASE_SCORE,
        "outputs": list(SCORE_NAMES + BBOX_NAMES + KPS_NAMES),
        "detections": [
            {k: d[k] for k in ("stride", "x", "y", "anchor", "row", "score", "distances",
                               "kps_d", "box", "kps")}
            for d in DETECTIONS
        ],
    }


def main():
    check_expected()
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")
    scrfd = scrfd_model()
    save(scrfd, os.path.join(root, "scrfd_synth", "scrfd.onnx"))
    save(embed_model(), os.path.join(root, "scrfd_synth", "embed.onnx"))
    with open(os.path.join(root, "scrfd_synth", "expected.json"), "w") as f:
        json.dump(expected_json(), f, indent=2, sort_keys=True)
        f.write("\n")
    save(scrfd, os.path.join(root, "detector_only", "scrfd.onnx"))
    save(unknown_model(), os.path.join(root, "unknown_only", "unknown.onnx"))
    save(int_output_model(), os.path.join(root, "misc", "int_output.onnx"))


if __name__ == "__main__":
    main()
