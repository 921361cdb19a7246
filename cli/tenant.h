/*
 * The tenant and operator commands of stratusctl that talk to
 * stratus-scheduler: cli/instance.c (boot, delete, stop, start, reboot,
 * console, list, show) and cli/catalog.c (quota, flavor, image, host), on
 * the request session of cli/tenant.c (cli/cli_priv.h). Each is one row of
 * cli_commands[] in cli/main.c. See docs/scheduler.md "stratusctl".
 */
#ifndef STRATUS_CLI_TENANT_H
#define STRATUS_CLI_TENANT_H

#include "cli/cli.h"

/* Exit status beyond enum cli_exit: no outcome in time (the request may
 * still take effect; the same command again is safe). */
#define CLI_TIMEOUT 3

/* cli/instance.c */
int cli_boot(struct cli_ctx *ctx, int argc, char **argv);
int cli_delete(struct cli_ctx *ctx, int argc, char **argv);
int cli_rebuild(struct cli_ctx *ctx, int argc, char **argv); /* issue 18 */
int cli_stop(struct cli_ctx *ctx, int argc, char **argv);
int cli_start(struct cli_ctx *ctx, int argc, char **argv);
int cli_reboot(struct cli_ctx *ctx, int argc, char **argv);
int cli_console(struct cli_ctx *ctx, int argc, char **argv);
int cli_list(struct cli_ctx *ctx, int argc, char **argv);
int cli_show(struct cli_ctx *ctx, int argc, char **argv);
/* cli/catalog.c */
int cli_quota(struct cli_ctx *ctx, int argc, char **argv);
int cli_flavor(struct cli_ctx *ctx, int argc, char **argv);
int cli_secgroup(struct cli_ctx *ctx, int argc, char **argv); /* cli/secgroup.c */
int cli_image(struct cli_ctx *ctx, int argc, char **argv);
int cli_host(struct cli_ctx *ctx, int argc, char **argv);
/* cli/resize.c (issue 18) */
int cli_resize(struct cli_ctx *ctx, int argc, char **argv);
int cli_resize_confirm(struct cli_ctx *ctx, int argc, char **argv);
int cli_resize_revert(struct cli_ctx *ctx, int argc, char **argv);
/* cli/migrate.c */
int cli_migrate(struct cli_ctx *ctx, int argc, char **argv);
/* cli/credential.c */
int cli_credential(struct cli_ctx *ctx, int argc, char **argv);
/* cli/snapshot.c (issue 18) */
int cli_snapshot(struct cli_ctx *ctx, int argc, char **argv);
/* cli/volume.c */
int cli_volume(struct cli_ctx *ctx, int argc, char **argv);

#endif
