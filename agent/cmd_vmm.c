/* placeholder until the module lands */
#include <stdio.h>

#include "agent/commands.h"

int agent_cmd_host_info(int argc, char **argv)
{
	(void)argc;
	fprintf(stderr, "stratus-agent %s: not implemented yet (issue 3, module vmm)\n", argv[0]);
	return 1;
}

int agent_cmd_render_domain(int argc, char **argv)
{
	(void)argc;
	fprintf(stderr, "stratus-agent %s: not implemented yet (issue 3, module vmm)\n", argv[0]);
	return 1;
}
