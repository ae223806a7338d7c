#!/usr/bin/env bash
# The facework CLI as a user runs it: real binary, real photos, JSON checked field by field.
set -euo pipefail
# shellcheck source=tests/integration/cli-env.sh
. "$(dirname "$0")/cli-env.sh"
export FACEWORK_LOG_LEVEL=warn

# Runs from another directory: the default pack is found whatever the working directory.
cd "$tmp"

# detect: boxes, scores, 5 landmarks, no embeddings
"$fw" detect "$photos/sample1.jpg" >detect.json
$py - detect.json <<'PY' || fail "detect output"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["provider"] == "cpu" and d["model"] == "default", d
(r,) = d["results"]
assert r["width"] == 1920 and r["height"] == 1280, r
assert len(r["faces"]) == 3, len(r["faces"])
for f in r["faces"]:
    assert len(f["bbox"]) == 4 and 0.65 <= f["score"] <= 1
    assert len(f["landmarks"]) == 5 and all(len(p) == 2 for p in f["landmarks"])
    assert "embedding" not in f
PY

# analyze a directory: every image, in name order, 512-D unit embeddings
mkdir imgs
cp "$photos"/sample*.jpg imgs/
printf 'not an image' >imgs/zz-broken.jpg
echo "ignored" >imgs/notes.txt
"$fw" analyze imgs >analyze.json
$py - analyze.json <<'PY' || fail "analyze output"
import json, math, sys
d = json.load(open(sys.argv[1]))
res = d["results"]
names = [r["path"].rsplit("/", 1)[1] for r in res]
assert names == ["sample%d.jpg" % i for i in range(1, 7)] + ["zz-broken.jpg"], names
assert [len(r["faces"]) for r in res[:6]] == [3, 3, 3, 4, 5, 4]
for r in res[:6]:
    for f in r["faces"]:
        e = f["embedding"]
        assert len(e) == 512
        assert abs(math.sqrt(sum(x * x for x in e)) - 1) < 1e-3
assert res[6]["error"]["code"] == "unsupported", res[6]
assert res[6]["error"]["message"]
PY

# compare: the same photo is the same person; the largest faces of two different group
# photos are different people
"$fw" compare "$photos/sample1.jpg" "$photos/sample1.jpg" >same.json
"$fw" compare --threshold 0.42 "$photos/sample1.jpg" "$photos/sample2.jpg" >diff.json
$py - same.json diff.json <<'PY' || fail "compare output"
import json, sys
s = json.load(open(sys.argv[1])); d = json.load(open(sys.argv[2]))
assert s["same"] is True and s["cosine"] > 0.99 and s["threshold"] == 0.42, s
assert d["same"] is False and d["cosine"] < 0.42, d
PY

# models: kinds, shapes, providers
"$fw" models >models.json
$py - models.json <<'PY' || fail "models output"
import json, sys
d = json.load(open(sys.argv[1]))
kinds = {m["role"]: m["kind"] for m in d["models"]}
assert kinds == {"detector": "ultralight", "landmarks": "landmark68", "embedder": "embedder"}, kinds
assert all(m["provider"] == "cpu" for m in d["models"])
assert d["embedding_dim"] == 512 and d["onnxruntime_version"].startswith("1.29")
PY
"$fw" models "$FW_TEST_DATA/models/scrfd_synth" | grep -q '"scrfd"' || fail "models DIR"

# errors: clear messages and non-zero exits, never a crash
set +e
"$fw" models /nonexistent/pack 2>err.txt; rc=$?
[ $rc -eq 1 ] && grep -qi "nonexistent" err.txt || fail "missing pack: rc=$rc $(cat err.txt)"
"$fw" detect --provider cuda "$photos/sample1.jpg" >/dev/null 2>err.txt; rc=$?
[ $rc -eq 1 ] && grep -qi "cuda" err.txt || fail "unavailable provider: rc=$rc $(cat err.txt)"
"$fw" detect --provider nonsense "$photos/sample1.jpg" >/dev/null 2>err.txt; rc=$?
[ $rc -eq 1 ] && grep -qi "unknown provider" err.txt || fail "bad provider: rc=$rc"
"$fw" detect --max-faces abc x.jpg >/dev/null 2>err.txt; rc=$?
[ $rc -eq 2 ] || fail "bad option: rc=$rc"
"$fw" detect missing.jpg >out.json 2>err.txt; rc=$?
[ $rc -eq 1 ] && grep -q '"not_found"' out.json || fail "missing file: rc=$rc $(cat out.json)"
"$fw" compare "$photos/sample1.jpg" >/dev/null 2>&1; rc=$?
[ $rc -eq 2 ] || fail "compare arity: rc=$rc"
"$fw" frobnicate >/dev/null 2>&1; rc=$?
[ $rc -eq 2 ] || fail "unknown command: rc=$rc"
set -e

# options: --max-faces and --min-face-size
"$fw" detect --max-faces 2 "$photos/sample5.jpg" | $py -c '
import json, sys; r = json.load(sys.stdin)["results"][0]; assert len(r["faces"]) == 2, r' ||
  fail "--max-faces"
"$fw" detect --min-face-size 100000 "$photos/sample5.jpg" | $py -c '
import json, sys; r = json.load(sys.stdin)["results"][0]; assert r["faces"] == [], r' ||
  fail "--min-face-size"

# quality: every face has its quality object; a preset filters; crops go to --crops-dir as
# JPEG files of the box grown by the margin; compare refuses an image without a usable face
"$fw" detect --quality-preset ingest --quality-action annotate "$photos/sample6.jpg" >q.json
"$fw" detect --quality-preset ingest "$photos/sample6.jpg" >qf.json
mkdir crops
"$fw" detect --crops box --face-margin 0.2 --crops-dir crops "$photos/sample6.jpg" >qc.json
$py - q.json qf.json qc.json crops <<'PY' || fail "quality output"
import json, os, struct, sys
q, qf, qc = (json.load(open(p))["results"][0] for p in sys.argv[1:4])
faces = q["faces"]
assert len(faces) == 4, faces
for f in faces:
    k = f["quality"]
    assert set(k) == {"score", "usable", "reasons", "sharpness", "yaw", "pitch", "roll", "size"}, k
    assert 0 < k["score"] <= 1 and k["usable"] == (k["reasons"] == []), k
    assert k["sharpness"]["aligned"] > 0 and k["sharpness"]["box"] > 0, k
assert any(not f["quality"]["usable"] for f in faces), "ingest passes every face of sample6"
usable = [f["bbox"] for f in faces if f["quality"]["usable"]]
assert [f["bbox"] for f in qf["faces"]] == usable, (qf["faces"], usable)
for i, f in enumerate(qc["faces"]):
    c = f["crop"]
    path = os.path.join(sys.argv[4], "sample6_%d.jpg" % i)
    assert c["path"].endswith("crops/sample6_%d.jpg" % i) and c["format"] == "jpeg", c
    data = open(path, "rb").read()
    assert data[:3] == b"\xff\xd8\xff", path
    # the SOF0 frame header holds the height and width
    sof = data.index(b"\xff\xc0")
    h, w = struct.unpack(">HH", data[sof + 5:sof + 9])
    x1, y1, x2, y2 = f["bbox"]
    assert (w, h) == (c["width"], c["height"]), (w, h, c)
    assert abs(w - min(1920, x2 + 0.2 * (x2 - x1)) + max(0, x1 - 0.2 * (x2 - x1))) <= 2, (w, f["bbox"])
PY
set +e
"$fw" compare --quality-preset verify "$photos/sample2.jpg" "$photos/sample6.jpg" >out.json 2>err.txt
rc=$?
set -e
[ $rc -eq 1 ] && grep -q "sample2.jpg: no usable face" err.txt && grep -q "sharpness" err.txt ||
  fail "compare with an unusable face: rc=$rc $(cat err.txt)"
"$fw" compare --quality-preset search "$photos/sample2.jpg" "$photos/sample6.jpg" >cq.json
$py -c '
import json, sys; d = json.load(open(sys.argv[1]))
assert d["quality"]["a"]["usable"] and d["quality"]["b"]["usable"], d' cq.json ||
  fail "compare --quality-preset search"
set +e
"$fw" detect --crops-dir crops "$photos/sample6.jpg" >/dev/null 2>err.txt; rc=$?
[ $rc -eq 2 ] && grep -q "needs --crops" err.txt || fail "--crops-dir without --crops: rc=$rc"
"$fw" detect --quality-preset strict "$photos/sample6.jpg" >/dev/null 2>&1; rc=$?
[ $rc -eq 2 ] || fail "bad preset: rc=$rc"
set -e
echo "test_cli: all checks passed"
