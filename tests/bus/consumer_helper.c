/*
 * A consumer in a process of its own, for the at-least-once test
 * (tests/bus/test_stratus_bus.sh):
 *
 *   consumer_helper GROUP TOPIC ack    handle one envelope durably, commit, exit 0
 *   consumer_helper GROUP TOPIC hang   receive one envelope and hang in the
 *                                      handler (the test SIGKILLs it there:
 *                                      its offset was never stored)
 *
 * Prints "got ID" for each envelope. Bootstrap: the address file
 * ($STRATUS_BUS_ADDR_FILE). Exits 1 when nothing came within 30 s.
 */
#define LOG_TAG "helper"
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "bus/bus.h"

static int handle(void *opaque, const struct bus_message *m)
{
	const char *mode = opaque;

	printf("got %s\n", m->env->id);
	fflush(stdout);
	if (strcmp(mode, "hang") == 0)
		for (;;)
			pause(); /* the effect never becomes durable */
	return 0;
}

int main(int argc, char **argv)
{
	struct bus_config cfg = { .client_id = (char *)(uintptr_t)"consumer-helper" };
	struct bus_consumer *c = NULL;
	int64_t deadline;
	int r = 0;

	if (argc != 4) {
		fprintf(stderr, "usage: consumer_helper GROUP TOPIC ack|hang\n");
		return 2;
	}
	log_init("consumer_helper", false, LOG_LVL_WARN);
	const char *topics[] = { argv[2], NULL };
	struct bus_consumer_opts o = { .group_id = argv[1], .topics = topics };

	if (bus_consumer_new(&cfg, &o, &c) < 0) {
		fprintf(stderr, "%s\n", err_msg());
		return 1;
	}
	deadline = time_mono_ms() + 30000;
	while (time_mono_ms() < deadline && (r = bus_consumer_poll(c, 200, handle, argv[3])) == 0)
		;
	if (r == 1 && bus_consumer_commit(c) < 0)
		fprintf(stderr, "%s\n", err_msg());
	bus_consumer_free(c);
	return r == 1 ? 0 : 1;
}
