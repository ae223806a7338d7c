#!/usr/bin/env python3
"""Summaries for scripts/gpu/device.sh (standard library only; runs on the device machine).

  summarize.py --compare CPU.json GPU.json [--label NAME]
      `facework analyze` outputs of the same photos on two providers: per photo the face
      counts, the largest box difference and the smallest embedding cosine (markdown; exit
      status 1 when counts differ, a box is off by more than 1 px, a cosine is < 0.999 or a
      photo failed). NAME (default GPU) names the second provider in the table. Also used by
      tests/integration/test_cli_webgpu.sh (WebGPU against the CPU).

  summarize.py --out DIR --phases PHASES.tsv --provider P --cores N
      The run's tables as markdown on stdout: the sweep (DIR/sweep.tsv) with the GPU
      utilisation nvidia-smi sampled during each point (DIR/nvsmi.csv, matched by time
      through PHASES.tsv), the ceiling (DIR/ceiling.md), the in-process stage split
      (DIR/pipeline.md), the best end-to-end figure against the 2,000 images/s goal and the
      ceiling, and the stage that bounds it.
"""
import argparse
import csv
import datetime
import json
import math
import os
import sys

GOAL = 2000.0


def compare(cpu_path, gpu_path, label="GPU"):
    cpu = {r["path"]: r for r in json.load(open(cpu_path))["results"]}
    gpu = {r["path"]: r for r in json.load(open(gpu_path))["results"]}
    ok = len(cpu) > 0
    print(f"## correctness: CPU vs {label} answers (facework analyze, {len(cpu)} photos)\n")
    print(f"| photo | faces CPU | faces {label} | largest box difference px | smallest cosine |")
    print("|---|---|---|---|---|")
    for path in sorted(cpu):
        if "faces" not in cpu[path] or "faces" not in gpu.get(path, {}):
            ok = False
            print(f"| {os.path.basename(path)} | failed on one or both | | | |")
            continue
        a, b = cpu[path]["faces"], gpu[path]["faces"]
        box, cos = 0.0, 1.0
        if len(a) == len(b):
            used = set()
            for fa in a:
                # match by box centre (order can differ when scores tie)
                best, bi = None, -1
                for i, fb in enumerate(b):
                    if i in used:
                        continue
                    d = max(abs(x - y) for x, y in zip(fa["bbox"], fb["bbox"]))
                    if best is None or d < best:
                        best, bi = d, i
                used.add(bi)
                box = max(box, best)
                fb = b[bi]
                if fa.get("embedding") and fb.get("embedding"):
                    c = sum(x * y for x, y in zip(fa["embedding"], fb["embedding"]))
                    cos = min(cos, c)
        else:
            ok = False
        if box > 1.0 or cos < 0.999:
            ok = False
        print(f"| {os.path.basename(path)} | {len(a)} | {len(b)} | {box:.3f} | {cos:.5f} |")
    print(f"\nverdict: {'same answers' if ok else 'DIFFERENT answers'} "
          "(counts equal, boxes within 1 px, cosine >= 0.999)\n")
    return 0 if ok else 1


def read_phases(path):
    out = {}
    try:
        for line in open(path):
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 3:
                out[parts[0]] = (float(parts[1]), float(parts[2]))
    except OSError:
        pass
    return out


def read_nvsmi(path):
    """[(epoch_s, util_gpu, util_mem, mem_used_mib, mem_total_mib)]"""
    rows = []
    try:
        for r in csv.reader(open(path)):
            if len(r) < 5:
                continue
            try:
                ts = datetime.datetime.strptime(r[0].strip(), "%Y/%m/%d %H:%M:%S.%f")
                # nvidia-smi prints local time; the phases are epoch seconds
                epoch = ts.timestamp()
                rows.append((epoch, float(r[1]), float(r[2]), float(r[3]), float(r[4])))
            except ValueError:
                continue
    except OSError:
        pass
    return rows


def gpu_during(samples, span):
    if not span:
        return None
    t0, t1 = span
    # skip the first second of the window (warm-up), keep the rest
    sel = [s for s in samples if t0 + 1.0 <= s[0] <= t1]
    if not sel:
        return None
    n = len(sel)
    return (sum(s[1] for s in sel) / n, max(s[1] for s in sel), max(s[3] for s in sel))


def read_tsv(path):
    try:
        rows = list(csv.DictReader(open(path), delimiter="\t"))
    except OSError:
        return []
    return rows


def num(v, d=1):
    try:
        x = float(v)
    except (TypeError, ValueError):
        return "-"
    if math.isnan(x):
        return "-"
    return f"{x:.{d}f}"


def bound_stage(row, util, cores):
    """Which stage limits this point (a judgement from the counters, stated as such)."""
    wcpu = float(row.get("worker_cpu_pct") or 0)
    ccpu = float(row.get("client_cpu_pct") or 0)
    gpu = util[0] if util else None
    conc = int(row.get("concurrency") or 0) * int(row.get("images_per_request") or 1)
    det_busy = float(row.get("detect_busy_pct") or 0)
    emb_busy = float(row.get("embed_busy_pct") or 0)
    if gpu is not None and gpu >= 85:
        return f"GPU (utilisation {gpu:.0f}%)"
    if wcpu + ccpu >= 0.85 * 100 * cores:
        return (f"CPU: decode + preprocessing (worker {wcpu:.0f}% + load generator "
                f"{ccpu:.0f}% of {100 * cores}%)")
    if wcpu >= 0.85 * 100 * max(cores - 2, 1):
        return f"CPU: decode + preprocessing (worker {wcpu:.0f}%)"
    if max(det_busy, emb_busy) >= 180:
        which = "detector" if det_busy >= emb_busy else "embedder"
        return f"{which} runs (its two threads busy {max(det_busy, emb_busy):.0f}%)"
    if conc <= 16:
        return f"latency: {conc} images in flight do not fill the pipeline"
    return "none saturated (queueing / batching; see the columns)"


def summary(out, phases_path, provider, cores):
    """The verdict first, then the tables (printed into a buffer while the best is found)."""
    import io
    import contextlib

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        verdict = tables(out, phases_path, provider, cores)
    print("## verdict\n")
    print("\n".join(verdict) + "\n")
    print(buf.getvalue())


def tables(out, phases_path, provider, cores):
    phases = read_phases(phases_path)
    samples = read_nvsmi(os.path.join(out, "nvsmi.csv"))
    rows = read_tsv(os.path.join(out, "sweep.tsv"))
    print("## sweep: worker on %s over HTTP/1.1, 1440-px photos (1.4-1.7 MP JPEGs)\n" % provider)
    print("| point | concurrency | img/req | img/s | p50 ms | p95 ms | p99 ms | worker CPU % | "
          "client CPU % | GPU util % mean / max | GPU mem MiB | detect batch | embed batch | "
          "detector busy % | embedder busy % | errors | bound by |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    best, best_row, best_util = 0.0, None, None
    for r in rows:
        util = gpu_during(samples, phases.get(r["phase"]))
        ut = f"{util[0]:.0f} / {util[1]:.0f}" if util else "-"
        mem = f"{util[2]:.0f}" if util else "-"
        errs = int(float(r.get("errors") or 0)) + int(float(r.get("mismatches") or 0))
        stage = bound_stage(r, util, cores) if r["mode"] != "inproc" else "-"
        print(f"| {r['phase']} | {r['concurrency']} | {r['images_per_request']} | "
              f"{num(r['img_per_s'])} | {num(r['p50_ms'])} | {num(r['p95_ms'])} | "
              f"{num(r['p99_ms'])} | {num(r['worker_cpu_pct'], 0)} | "
              f"{num(r['client_cpu_pct'], 0)} | {ut} | {mem} | {num(r['detect_batch'])} | "
              f"{num(r['embed_batch'])} | {num(r['detect_busy_pct'], 0)} | "
              f"{num(r['embed_busy_pct'], 0)} | {errs} | {stage} |")
        if r["mode"] != "inproc" and errs == 0 and float(r["img_per_s"] or 0) > best:
            best, best_row, best_util = float(r["img_per_s"]), r, util
    print("\nworker CPU: %% of one core (this host has %d); GPU utilisation: nvidia-smi "
          "samples every 250 ms during the point's window after its first second; batch "
          "sizes and busy %% from the worker's /metrics over the window (two threads per model "
          "on a GPU: up to 200%%).\n" % cores)
    inproc = [r for r in rows if r["mode"] == "inproc"]
    ceiling = None
    try:
        for line in open(os.path.join(out, "ceiling.md")):
            if line.startswith("ceiling_best_img_per_s="):
                ceiling = float(line.split("=", 1)[1])
    except (OSError, ValueError):
        pass
    for name in ("ceiling.md", "pipeline.md"):
        try:
            text = open(os.path.join(out, name)).read().strip()
        except OSError:
            continue
        print(text.replace("\nceiling_best_img_per_s=", "\n\nbest: ") + "\n")
    v = []
    if best_row is None:
        v.append("- no sweep point finished without errors")
        return v
    at = f"concurrency {best_row['concurrency']} x {best_row['images_per_request']} img/req"
    v.append(f"- best end to end: {best:.0f} img/s ({at}; p50 {num(best_row['p50_ms'])} ms, "
             f"p99 {num(best_row['p99_ms'])} ms); goal >= {GOAL:.0f} img/s: "
             f"{'met' if best >= GOAL else 'NOT met'}")
    if ceiling:
        v.append(f"- bare-model ceiling on the same GPU, same run: {ceiling:.0f} img/s; end to "
                 f"end = {100 * best / ceiling:.0f}% of it")
    if inproc:
        r = inproc[-1]
        v.append(f"- the same requests in-process (no HTTP, c={r['concurrency']} x "
                 f"{r['images_per_request']}): {num(r['img_per_s'], 0)} img/s")
    if best_util:
        v.append(f"- GPU utilisation at the best point: mean {best_util[0]:.0f}%, "
                 f"max {best_util[1]:.0f}%")
    v.append(f"- bound by: {bound_stage(best_row, best_util, cores)}")
    return v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--compare", nargs=2)
    ap.add_argument("--label", default="GPU")
    ap.add_argument("--out")
    ap.add_argument("--phases")
    ap.add_argument("--provider", default="cuda")
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    a = ap.parse_args()
    if a.compare:
        return compare(*a.compare, label=a.label)
    if a.out:
        summary(a.out, a.phases or "", a.provider, a.cores)
        return 0
    ap.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
