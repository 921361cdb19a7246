/* placeholder until the module lands */
#include <stdio.h>

#include "agent/commands.h"

int agent_cmd_seed(int argc, char **argv)
{
	(void)argc;
	fprintf(stderr, "stratus-agent %s: not implemented yet (issue 5, module metadata)\n", argv[0]);
	return 1;
}
