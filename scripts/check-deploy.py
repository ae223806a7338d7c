#!/usr/bin/env python3
"""Structural checks of the deployment files (python3-yaml): every YAML document parses, has
the fields its kind requires, probes match /health's contract, and the Dockerfile has its
stages, a non-root USER and a HEALTHCHECK on /health. Not a Kubernetes schema validation."""
import sys
import yaml

root = sys.argv[1] if len(sys.argv) > 1 else "."
problems = []

def need(cond, what):
    if not cond:
        problems.append(what)

docs = {}
for f in ["deploy/k8s/worker.yaml", "deploy/k8s/keda-scaledobject.yaml", "deploy/k8s/hpa.yaml"]:
    for d in yaml.safe_load_all(open(f"{root}/{f}")):
        need(isinstance(d, dict) and {"apiVersion", "kind", "metadata"} <= d.keys(), f"{f}: header")
        docs[d["kind"]] = d
dep = docs["Deployment"]["spec"]
c = dep["template"]["spec"]["containers"][0]
need(dep["selector"]["matchLabels"] == dep["template"]["metadata"]["labels"], "selector/labels")
need("tcpSocket" in c["livenessProbe"], "liveness = process up (tcpSocket)")
need(c["readinessProbe"]["httpGet"]["path"] == "/health", "readiness on /health")
need(docs["PodDisruptionBudget"]["apiVersion"] == "policy/v1", "PDB api")
need(docs["ScaledObject"]["spec"]["triggers"][0]["type"] == "redis-streams", "KEDA trigger")
need(docs["HorizontalPodAutoscaler"]["apiVersion"] == "autoscaling/v2", "HPA api")
comp = yaml.safe_load(open(f"{root}/compose.yaml"))
need({"redis", "worker", "backend"} <= comp["services"].keys(), "compose services")
gpu = comp["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
need(gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"], "compose GPU reservation")
df = open(f"{root}/deploy/Dockerfile").read()
need(df.count("\nFROM ") >= 2, "multi-stage Dockerfile")
need("\nUSER facework" in df, "non-root USER")
need("HEALTHCHECK" in df and "/health" in df, "HEALTHCHECK on /health")
for p in problems:
    print("check-deploy: FAIL:", p)
print(f"check-deploy: {len(docs)} Kubernetes documents, compose and Dockerfile checked, "
      f"{len(problems)} problems")
sys.exit(1 if problems else 0)
