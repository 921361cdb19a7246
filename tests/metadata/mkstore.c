/*
 * Test helper: write instance specs into an agent store the way the agent
 * does (store/store.h): a row per instance, state active, its address
 * allocated. Running it again with changed specs replaces the rows.
 *
 *   mkstore STORE.db INSTANCES.json
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "store/store.h"
#include "model/model.h"

int main(int argc, char **argv)
{
	struct store *st = NULL;
	json_error_t je;
	json_t *arr;
	size_t i;
	json_t *el;

	if (argc != 3) {
		fprintf(stderr, "usage: mkstore STORE.db INSTANCES.json\n");
		return 2;
	}
	arr = json_load_file(argv[2], 0, &je);
	if (!json_is_array(arr) || store_open(argv[1], false, &st) < 0) {
		fprintf(stderr, "mkstore: %s\n", arr ? err_msg() : je.text);
		return 1;
	}
	json_array_foreach(arr, i, el) {
		struct instance_spec s;
		struct in_addr a;
		char addr[32], ip[INET_ADDRSTRLEN], *slash;
		long prefix;

		if (model_spec_parse(el, &s) < 0 || !s.network.present) {
			fprintf(stderr, "mkstore: instance %zu: %s\n", i, err_msg());
			return 1;
		}
		snprintf(ip, sizeof(ip), "%s", s.network.address);
		slash = strchr(ip, '/');
		*slash = '\0';
		parse_long(slash + 1, 0, 32, &prefix);
		inet_pton(AF_INET, ip, &a);
		char *spec_json = json_dumps(el, 0);
		struct store_instance row = { .state = INST_ACTIVE };

		memcpy(row.uuid, s.uuid, sizeof(row.uuid));
		row.name = s.name;
		row.project = s.project;
		row.spec_json = spec_json;
		row.address = addr;
		row.mac = s.network.mac;
		if (store_address_allocate(st, s.uuid, ntohl(a.s_addr), ntohl(a.s_addr),
						 (int)prefix, s.network.mac, addr, sizeof(addr)) < 0 ||
		    store_instance_put(st, &row) < 0) {
			fprintf(stderr, "mkstore: %s\n", err_msg());
			return 1;
		}
		free(spec_json);
		model_spec_free(&s);
	}
	store_close(st);
	json_decref(arr);
	return 0;
}
