/* The worker service: `facework worker`. Wiring of the HTTP transport, the API codec, the
 * batcher, metrics, the lock file, signals, systemd notification and supervision. */
#ifndef FW_SERVER_WORKER_H
#define FW_SERVER_WORKER_H

/* Runs the worker with the subcommand's arguments (argv[0] is "worker"). Returns the
 * process exit status: 0 after a clean shutdown, 1 on a start-up failure, 2 on bad
 * options. */
int fw_worker_main(int argc, char **argv);

#endif
