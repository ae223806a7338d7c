/* Internal: subcommands implemented outside main.c. Each takes the subcommand's argv
 * (argv[0] is the subcommand name) and returns the process exit status. */
#ifndef FW_CLI_CLI_H
#define FW_CLI_CLI_H

int fw_cli_worker(int argc, char **argv);
int fw_cli_backend(int argc, char **argv);
int fw_cli_health(int argc, char **argv);
int fw_cli_submit(int argc, char **argv);

#endif
