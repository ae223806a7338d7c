/* Service subcommands: thin wrappers over the server and client layers. */
#include <stdio.h>

#include "cli/cli.h"
#include "server/worker.h"

int fw_cli_worker(int argc, char **argv)
{
    return fw_worker_main(argc, argv);
}

int fw_cli_backend(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "facework: 'backend' is not available in this build yet\n");
    return 2;
}

int fw_cli_health(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "facework: 'health' is not available in this build yet\n");
    return 2;
}
