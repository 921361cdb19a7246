/* Helpers every stratusctl command shares. */
#include <stdarg.h>
#include <stdio.h>

#include "cli/cli.h"

void cli_error(const struct cli_ctx *ctx, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", ctx->prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}
