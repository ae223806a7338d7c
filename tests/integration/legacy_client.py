#!/usr/bin/python3
"""Behaves like the Python client of the old FastAPI GPU worker (standard library only).

Usage: legacy_client.py WORKER_URL IMAGE [IMAGE...]

It does what that client did: GET /health and read the legacy fields, then POST the images
to /detect_faces_batch_multipart as repeated `images` file parts, with `image_hashes` (a JSON
string: [{"phash": ..., "index": i}]) and `min_face_quality` form fields, then read
results[phash][i]["embedding"], ["bbox"], ["quality"] (and the rest of the face record) the
way the client consumed them. Exits 0 when every field it reads is present with the right
type, 1 otherwise (with the reason on stderr).
"""

import hashlib
import json
import math
import os
import sys
import urllib.request
import uuid


def fail(msg):
    sys.stderr.write("legacy_client: %s\n" % msg)
    sys.exit(1)


def is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def multipart(fields, files):
    """A multipart/form-data body as requests/httpx build it."""
    boundary = uuid.uuid4().hex
    out = []
    for name, value in fields:
        out.append(("--%s\r\n" % boundary).encode())
        out.append(('Content-Disposition: form-data; name="%s"\r\n\r\n' % name).encode())
        out.append(value.encode() + b"\r\n")
    for name, filename, data, ctype in files:
        out.append(("--%s\r\n" % boundary).encode())
        out.append(('Content-Disposition: form-data; name="%s"; filename="%s"\r\n'
                    % (name, filename)).encode())
        out.append(("Content-Type: %s\r\n\r\n" % ctype).encode())
        out.append(data + b"\r\n")
    out.append(("--%s--\r\n" % boundary).encode())
    return b"".join(out), "multipart/form-data; boundary=%s" % boundary


def time_scale():
    """Deadline factor the integration tests pass in FW_TEST_TIME_SCALE (40 under valgrind)."""
    try:
        return max(1.0, float(os.environ.get("FW_TEST_TIME_SCALE", "1")))
    except ValueError:
        return 1.0


def main():
    scale = time_scale()
    if len(sys.argv) < 3:
        fail("usage: legacy_client.py WORKER_URL IMAGE [IMAGE...]")
    url = sys.argv[1].rstrip("/")

    with urllib.request.urlopen(url + "/health", timeout=30 * scale) as resp:
        health = json.loads(resp.read())
    for key, kind in (("status", str), ("gpu_available", bool), ("model_loaded", bool),
                      ("directml_available", bool)):
        if not isinstance(health.get(key), kind):
            fail("/health %s: %r" % (key, health.get(key)))
    if not is_number(health.get("uptime_seconds")):
        fail("/health uptime_seconds: %r" % health.get("uptime_seconds"))
    if health["status"] != "healthy" or not health["model_loaded"]:
        fail("worker not ready: %r" % health)

    files, hashes = [], []
    for i, path in enumerate(sys.argv[2:]):
        with open(path, "rb") as f:
            data = f.read()
        phash = hashlib.sha1(data).hexdigest()[:16] + "%02d" % i  # a perceptual-hash stand-in
        files.append(("images", "image_%d.jpg" % i, data, "image/jpeg"))
        hashes.append({"phash": phash, "index": i})
    body, ctype = multipart([("image_hashes", json.dumps(hashes)),
                             ("min_face_quality", "0.5")], files)
    req = urllib.request.Request(url + "/detect_faces_batch_multipart", data=body,
                                 headers={"Content-Type": ctype}, method="POST")
    with urllib.request.urlopen(req, timeout=120 * scale) as resp:
        if resp.status != 200:
            fail("status %d" % resp.status)
        payload = json.loads(resp.read())

    if not isinstance(payload.get("results"), dict):
        fail("results is not a dict")
    if not is_number(payload.get("processing_time_ms")):
        fail("processing_time_ms: %r" % payload.get("processing_time_ms"))
    if not isinstance(payload.get("gpu_used"), bool):
        fail("gpu_used: %r" % payload.get("gpu_used"))
    if not isinstance(payload.get("worker_id"), str):
        fail("worker_id: %r" % payload.get("worker_id"))

    total = 0
    for h in hashes:
        faces = payload["results"][h["phash"]]  # KeyError -> traceback -> exit 1
        if not isinstance(faces, list):
            fail("results[%s] is not a list" % h["phash"])
        for i in range(len(faces)):
            face = faces[i]
            emb = face["embedding"]
            bbox = face["bbox"]
            quality = face["quality"]
            if not (isinstance(emb, list) and len(emb) == 512 and all(map(is_number, emb))):
                fail("embedding of %s[%d]" % (h["phash"], i))
            norm = math.sqrt(sum(x * x for x in emb))
            emb = [x / norm for x in emb]  # what every consumer did
            if abs(sum(x * x for x in emb) - 1) > 1e-6:
                fail("embedding cannot be normalised")
            if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(is_number, bbox))):
                fail("bbox of %s[%d]: %r" % (h["phash"], i, bbox))
            x1, y1, x2, y2 = bbox
            if not (x2 > x1 and y2 > y1):
                fail("bbox of %s[%d] is not x1,y1,x2,y2: %r" % (h["phash"], i, bbox))
            if not is_number(quality) or not 0.5 <= quality <= 1:
                fail("quality of %s[%d]: %r" % (h["phash"], i, quality))
            lms = face["landmarks"]
            if not (isinstance(lms, list) and len(lms) == 5 and
                    all(isinstance(p, list) and len(p) == 2 and all(map(is_number, p))
                        for p in lms)):
                fail("landmarks of %s[%d]: %r" % (h["phash"], i, lms))
            if face.get("age", 0) is not None or face.get("gender", 0) is not None:
                fail("age/gender of %s[%d] are not null" % (h["phash"], i))
            total += 1
    print("legacy_client: %d images, %d faces" % (len(hashes), total))
    return 0


if __name__ == "__main__":
    sys.exit(main())
