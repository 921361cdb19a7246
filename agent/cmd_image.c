/* placeholder until the module lands */
#include <stdio.h>

#include "agent/commands.h"

int agent_cmd_image(int argc, char **argv)
{
	(void)argc;
	fprintf(stderr, "stratus-agent %s: not implemented yet (issue 4, module images)\n", argv[0]);
	return 1;
}
