/* The backend service: `facework backend` (DESIGN.md, "the application-side service built on
 * the client"). It serves the worker's v1 and legacy API on 127.0.0.1:8000 by default and
 * answers every request through the client library, so that every image gets a result even
 * when every worker is down (the client's CPU fallback).
 *
 * Differences from the worker's answers:
 *  - v1 answers carry a top-level "origins" array, one entry per result in input order: the
 *    base URL of the worker that computed it, "cpu-fallback", or "" when nothing did (a bad
 *    item). "provider" is "worker", "cpu-fallback" or "mixed" accordingly, "model" is the
 *    fallback pack's directory name.
 *  - legacy answers are unchanged in shape; gpu_used is true when a worker computed any
 *    item, worker_id is the backend's id.
 *  - GET /health: 200 with status "healthy" (a worker is healthy: its last health check
 *    passed or, before any check or with checks disabled, its breaker is not open) or
 *    "degraded" (none is; the CPU fallback answers), 503 with "starting" (--wait-ready in
 *    progress), "draining" or "unavailable" (no worker and the fallback disabled). It lists
 *    every worker (URL, breaker state, last health check, counters, breaker transitions as
 *    "from->to": count) and the share of items computed by workers and by the fallback.
 *  - GET /metrics: the client's facework_client_* families, the backend's HTTP metrics,
 *    facework_backend_worker_success_ratio{worker} and process statistics.
 *
 * Settings: the backend's own flags (--listen, --threads, ...; environment FACEWORK_BACKEND_*)
 * and the client's, whose flags (--worker-url, --timeout, ...) win over the GPU_WORKER_*
 * environment and ./.env, read by fw_client_config_from_env. `facework backend --help`
 * lists them. */
#ifndef FW_BACKEND_BACKEND_H
#define FW_BACKEND_BACKEND_H

/* Runs the backend with the subcommand's arguments (argv[0] is "backend"). Returns the
 * process exit status: 0 after a clean shutdown (SIGINT/SIGTERM), 1 on a start-up failure,
 * 2 on bad options. */
int fw_backend_main(int argc, char **argv);

#endif
