#!/usr/bin/python3
"""Expected values for tests/unit/core/test_quality.c, computed independently of facework.

Run at test-writing time (python3 + numpy, Debian python3-numpy); its output,
expected.json beside this file, is committed with it:

    /usr/bin/python3 tests/data/quality/make_expected.py > tests/data/quality/expected.json

What is computed here, each from its definition (docs/quality.md), not from facework's code:
- sharpness: OpenCV's cv2.Laplacian(cv2.cvtColor(img, RGB2GRAY), CV_64F).var(): gray in
  OpenCV's fixed point, the ksize-1 kernel [0 1 0; 1 -4 1; 0 1 0] with BORDER_REFLECT_101,
  population variance; on synthetic images (a formula both sides share) and on two real
  face crops (PNG files decoded here with zlib, so facework's PNG reader is checked too);
- pose: a least-squares affine camera with translation (numpy.linalg.lstsq), its nearest
  rotation by SVD, Euler angles R = Rz(roll) Rx(pitch') Ry(yaw'); on landmarks facework's
  detector found on the public test photos, and on landmarks made by projecting the 3D model
  at known angles (where the truth is the angles themselves);
- score and usable: the application's formula and presets, for a grid of measurements.
"""
import json
import math
import os
import struct
import zlib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

# ---------------------------------------------------------------------------- sharpness


def synthetic(w, h, seed):
    """RGB pattern, the same integer formula as test_quality.c's synthetic()."""
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    r = (x * 7 + y * 13 + (x * y) % 31 + seed) % 256
    g = (x * x + 3 * y + seed * 5) % 256
    b = ((x ^ y) * 11 + seed) % 256
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def gray(rgb):
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] * 4899 + rgb[..., 1] * 9617 + rgb[..., 2] * 1868 + 8192) >> 14


def reflect101(i, n):
    if n == 1:
        return np.zeros_like(i)
    i = np.where(i < 0, -i, i)
    return np.where(i >= n, 2 * n - 2 - i, i)


def laplacian_var(rgb):
    g = gray(rgb)
    h, w = g.shape
    ys, xs = np.arange(h), np.arange(w)
    up = g[reflect101(ys - 1, h), :]
    dn = g[reflect101(ys + 1, h), :]
    lf = g[:, reflect101(xs - 1, w)]
    rt = g[:, reflect101(xs + 1, w)]
    lap = (up + dn + lf + rt - 4 * g).astype(np.float64)
    return float(lap.var())


def read_png_rgb(path):
    """8-bit RGB, non-interlaced PNG (what facework writes), decoded with zlib."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w, h = 8, b"", 0, 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and ctype == 2 and interlace == 0
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = w * 3
    out = np.zeros((h, stride), dtype=np.int64)
    prev = np.zeros(stride, dtype=np.int64)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = np.frombuffer(raw, dtype=np.uint8, count=stride, offset=y * (stride + 1) + 1)
        cur = np.zeros(stride, dtype=np.int64)
        for i in range(stride):
            a = cur[i - 3] if i >= 3 else 0
            b = prev[i]
            c = prev[i - 3] if i >= 3 else 0
            if f == 0:
                p = 0
            elif f == 1:
                p = a
            elif f == 2:
                p = b
            elif f == 3:
                p = (a + b) // 2
            else:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                p = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            cur[i] = (int(line[i]) + p) & 255
        out[y] = cur
        prev = cur
    return out.reshape(h, w, 3).astype(np.uint8)


# ---------------------------------------------------------------------------- pose

TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                     [41.5493, 92.3655], [70.7299, 92.2041]])
DEPTH = np.array([10.0, 10.0, 0.0, 12.3, 12.3])  # docs/quality.md
MODEL = np.column_stack([TEMPLATE, DEPTH])


def rot(yaw, pitch, roll):
    """The rotation whose angles fw_pose_estimate reports (degrees)."""
    a, b, g = math.radians(-yaw), math.radians(-pitch), math.radians(roll)
    ry = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    rz = np.array([[math.cos(g), -math.sin(g), 0], [math.sin(g), math.cos(g), 0], [0, 0, 1]])
    return rz @ rx @ ry


def project(yaw, pitch, roll, scale, tx, ty):
    pts = (rot(yaw, pitch, roll) @ (MODEL - MODEL.mean(axis=0)).T).T[:, :2]
    return pts * scale + np.array([tx, ty])


def pose(lm):
    lm = np.asarray(lm, dtype=np.float64)
    design = np.column_stack([MODEL, np.ones(5)])  # x = A X + t
    sol, *_ = np.linalg.lstsq(design, lm, rcond=None)
    a = sol[:3].T  # 2 x 3
    u, _, vt = np.linalg.svd(a, full_matrices=False)
    r2 = u @ vt
    r = np.vstack([r2, np.cross(r2[0], r2[1])])
    yaw = -math.degrees(math.atan2(-r[2, 0], r[2, 2]))
    pitch = -math.degrees(math.asin(max(-1.0, min(1.0, r[2, 1]))))
    roll = math.degrees(math.atan2(-r[0, 1], r[1, 1]))
    return [yaw, pitch, roll]


# ---------------------------------------------------------------------------- scores

PRESETS = {  # min size, min sharpness, max yaw, max pitch, min score
    "none": (0, 0, 90, 90, 0.0),
    "ingest": (80, 80, 25, 25, 0.60),
    "enroll": (64, 30, 30, 30, 0.40),
    "verify": (80, 60, 25, 25, 0.55),
    "search": (32, 30, 45, 45, 0.30),
}


def score(sharp, yaw, pitch, size, p):
    min_size, _, max_yaw, max_pitch, _ = p
    c = lambda v: min(1.0, max(0.0, v))
    return (0.4 * c(sharp / 500.0) + 0.2 * c(1 - abs(yaw) / max_yaw) +
            0.2 * c(1 - abs(pitch) / max_pitch) + 0.2 * c(size / max(min_size, 112)))


def judge(sharp, yaw, pitch, size, p):
    s = score(sharp, yaw, pitch, size, p)
    reasons = []
    if size < p[0]:
        reasons.append("size")
    if sharp < p[1]:
        reasons.append("sharpness")
    if abs(yaw) > p[2]:
        reasons.append("yaw")
    if abs(pitch) > p[3]:
        reasons.append("pitch")
    if s < p[4]:
        reasons.append("score")
    return s, reasons


def main():
    out = {"sharpness_synthetic": [], "sharpness_files": [], "pose_real": [], "pose_synthetic": [],
           "scores": []}
    for w, h, seed, region in [(37, 23, 1, None), (64, 48, 7, [5, 9, 40, 30]), (1, 9, 3, None),
                               (9, 1, 4, None), (1, 1, 5, None), (2, 2, 6, None),
                               (112, 112, 11, None)]:
        img = synthetic(w, h, seed)
        sub = img if region is None else img[region[1]:region[3], region[0]:region[2]]
        out["sharpness_synthetic"].append({"w": w, "h": h, "seed": seed, "region": region,
                                           "expected": laplacian_var(sub)})
    for name in ["face_aligned.png", "face_box.png"]:
        img = read_png_rgb(os.path.join(HERE, name))
        out["sharpness_files"].append({"file": name, "w": img.shape[1], "h": img.shape[0],
                                       "expected": laplacian_var(img)})
    # landmarks facework's default pack found on @vladmandic/face-api's demo/sample1..6.jpg
    real = json.load(open(os.path.join(HERE, "landmarks.json")))
    for lm in real:
        out["pose_real"].append({"landmarks": lm, "expected": pose(lm)})
    for yaw, pitch, roll, scale, tx, ty in [(0, 0, 0, 1, 56, 72), (20, 0, 0, 2.5, 300, 200),
                                            (-35, 10, 5, 1.7, 900, 400), (10, -25, -30, 3, 50, 60),
                                            (0, 0, 90, 1.2, 500, 500), (-60, -5, 12, 0.8, 40, 40),
                                            (45, 30, -150, 4, 1000, 700)]:
        lm = project(yaw, pitch, roll, scale, tx, ty)
        out["pose_synthetic"].append({"truth": [yaw, pitch, roll], "landmarks": lm.tolist(),
                                      "numpy": pose(lm)})
    for name, p in PRESETS.items():
        for sharp, yaw, pitch, size in [(0, 0, 0, 0), (500, 0, 0, 112), (120, 10, -5, 90),
                                        (79.9, 24.9, 25.1, 80), (600, -40, 3, 300),
                                        (35, 29, -29, 64), (1000, 95, 0, 50)]:
            s, reasons = judge(sharp, yaw, pitch, size, p)
            out["scores"].append({"preset": name, "sharpness": sharp, "yaw": yaw, "pitch": pitch,
                                  "size": size, "score": s, "reasons": reasons})
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
