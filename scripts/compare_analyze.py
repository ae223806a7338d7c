#!/usr/bin/env python3
"""Compares two `facework analyze` JSON outputs of the same images (a reference, usually
the CPU provider, and a candidate, e.g. WebGPU): per image the same face count, each face
matched to the reference face whose box overlaps it most (IoU >= 0.5), and every matched
embedding's cosine to the reference >= --min-cosine. Prints one line per image and a summary;
exits 1 on any difference, 2 on unusable input.

usage: compare_analyze.py REF.json CAND.json [--min-cosine 0.999] [--provider NAME]
"""
import argparse
import json
import sys


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    na = sum(x * x for x in a) ** 0.5
    nb = sum(y * y for y in b) ** 0.5
    return dot / (na * nb) if na > 0 and nb > 0 else 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ref")
    ap.add_argument("cand")
    ap.add_argument("--min-cosine", type=float, default=0.999)
    ap.add_argument("--provider", help="the provider the candidate must report")
    a = ap.parse_args()
    try:
        ref = json.load(open(a.ref))
        cand = json.load(open(a.cand))
    except (OSError, ValueError) as e:
        print(f"compare: cannot read the outputs: {e}", file=sys.stderr)
        return 2
    if a.provider and cand.get("provider") != a.provider:
        print(f"compare: candidate ran on {cand.get('provider')!r}, not {a.provider!r}")
        return 1
    rr, cr = ref.get("results", []), cand.get("results", [])
    if not rr or len(rr) != len(cr):
        print(f"compare: {len(rr)} reference results, {len(cr)} candidate results")
        return 1
    bad, faces, worst = 0, 0, 1.0
    for r, c in zip(rr, cr):
        name = r.get("path", "?")
        if c.get("path") != r.get("path"):
            print(f"{name}: candidate has {c.get('path')!r} here")
            bad += 1
            continue
        if "error" in r or "error" in c:
            same = ("error" in r) == ("error" in c)
            print(f"{name}: error {'in both' if same else 'in one only'}")
            bad += 0 if same else 1
            continue
        rf, cf = r["faces"], c["faces"]
        if len(rf) != len(cf):
            print(f"{name}: {len(rf)} faces on the reference, {len(cf)} on the candidate")
            bad += 1
            continue
        low = 1.0
        for f in cf:
            best = max(rf, key=lambda g: iou(f["bbox"], g["bbox"]))
            if iou(f["bbox"], best["bbox"]) < 0.5:
                print(f"{name}: candidate face {f['bbox']} matches no reference face")
                bad += 1
                continue
            if "embedding" in best or "embedding" in f:
                cos = cosine(best.get("embedding", []), f.get("embedding", []))
                low = min(low, cos)
                if cos < a.min_cosine:
                    print(f"{name}: face {f['bbox']} cosine {cos:.6f} < {a.min_cosine}")
                    bad += 1
        faces += len(cf)
        worst = min(worst, low)
        print(f"{name}: {len(cf)} faces, lowest cosine {low:.6f}")
    print(f"compare: {len(rr)} images, {faces} faces, lowest cosine {worst:.6f}, "
          f"{bad} differences")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
