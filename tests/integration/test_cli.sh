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
