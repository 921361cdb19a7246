/*
 * stratus-agent host-info and render-domain: what the agent sees of this
 * host, and the domain XML it would boot for an instance spec.
 */
#define LOG_TAG "agent"
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "agent/commands.h"
#include "model/model.h"
#include "vmm/vmm.h"

int agent_cmd_host_info(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "sysfs", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *sysfs = NULL;
	struct vmm_topology *t = NULL;
	json_t *j;
	int c, r;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			sysfs = optarg;
			break;
		case 'h':
			printf("usage: stratus-agent host-info [--sysfs ROOT]\n");
			return 0;
		default:
			fprintf(stderr, "usage: stratus-agent host-info [--sysfs ROOT]\n");
			return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "usage: stratus-agent host-info [--sysfs ROOT]\n");
		return 2;
	}
	r = vmm_topology_load(sysfs, &t);
	if (r < 0) {
		fprintf(stderr, "stratus-agent host-info: %s\n", err_msg());
		return 1;
	}
	j = vmm_topology_to_json(t);
	vmm_topology_free(t);
	if (!j || json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) < 0) {
		json_decref(j);
		fprintf(stderr, "stratus-agent host-info: out of memory\n");
		return 1;
	}
	json_decref(j);
	putchar('\n');
	return 0;
}

#define RENDER_USAGE \
	"usage: stratus-agent render-domain [-c CONFIG] [--sysfs ROOT] [--accel auto|kvm|qemu]\n" \
	"                                   [--kernel FILE [--initrd FILE] [--cmdline TEXT]] SPEC.json\n"

int agent_cmd_render_domain(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "sysfs", required_argument, NULL, 's' },
		{ "accel", required_argument, NULL, 'a' },
		{ "kernel", required_argument, NULL, 'k' },
		{ "initrd", required_argument, NULL, 'i' },
		{ "cmdline", required_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct vmm_config cfg = { 0 };
	const struct cfg_section sections[] = {
		{ .name = "vmm", .fields = vmm_config_fields, .dst = &cfg },
		{ 0 },
	};
	const char *config = NULL, *sysfs = NULL, *accel = NULL;
	struct vmm_domain_params pp = { 0 };
	struct instance_spec spec;
	bool spec_ok = false, have_cfg = false;
	struct vmm_topology *t = NULL;
	struct vmm_placement pl = { 0 };
	_cleanup_free_ char *disk = NULL, *seed = NULL, *log = NULL, *xml = NULL;
	int c, r, ret = 1;

	optind = 1;
	while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			config = optarg;
			break;
		case 's':
			sysfs = optarg;
			break;
		case 'a':
			accel = optarg;
			break;
		case 'k':
			pp.kernel = optarg;
			break;
		case 'i':
			pp.initrd = optarg;
			break;
		case 'l':
			pp.cmdline = optarg;
			break;
		case 'h':
			fputs(RENDER_USAGE, stdout);
			return 0;
		default:
			fputs(RENDER_USAGE, stderr);
			return 2;
		}
	}
	if (optind + 1 != argc) {
		fputs(RENDER_USAGE, stderr);
		return 2;
	}
	r = config ? cfg_load_file(config, sections) : vmm_config_init(&cfg);
	if (r < 0)
		goto fail;
	have_cfg = config != NULL;
	if (accel) {
		for (cfg.accel = 0; cfg.accel < VMM_ACCEL_LAST; cfg.accel++)
			if (strcmp(accel, vmm_accel_names[cfg.accel]) == 0)
				break;
		if (cfg.accel == VMM_ACCEL_LAST) {
			fprintf(stderr, "stratus-agent render-domain: --accel: expected auto, kvm or "
					"qemu, got '%s'\n", accel);
			ret = 2;
			goto out;
		}
	}
	r = model_spec_parse_file(argv[optind], &spec);
	if (r < 0)
		goto fail;
	spec_ok = true;
	r = vmm_topology_load(sysfs ? sysfs : cfg.sysfs_root, &t);
	if (r < 0)
		goto fail;
	r = vmm_fit(t, have_cfg ? &cfg : NULL, NULL, &spec, &pl);
	if (r < 0)
		goto fail;

	pp.virt = vmm_accel_resolve((enum vmm_accel)cfg.accel);
	/* the paths the agent uses (docs/agent.md) */
	if (asprintf(&disk, "%s/%s.qcow2", cfg.instances_dir, spec.uuid) < 0 ||
	    asprintf(&log, "%s/%s.log", cfg.console_log_dir, spec.uuid) < 0 ||
	    (spec.seed != SPEC_SEED_NONE &&
	     asprintf(&seed, "%s/%s.seed.iso", cfg.instances_dir, spec.uuid) < 0)) {
		err_set(-ENOMEM, "out of memory");
		goto fail;
	}
	pp.disk_path = disk;
	pp.disk_format = "qcow2";
	pp.seed_path = seed;
	pp.seed_format = seed ? VMM_SEED_ISO : VMM_SEED_NONE;
	pp.bridge = cfg.bridge;
	pp.console_log = log;
	r = vmm_domain_xml(&spec, &pl, &pp, &xml);
	if (r < 0)
		goto fail;
	fputs(xml, stdout);
	ret = 0;
	goto out;
fail:
	fprintf(stderr, "stratus-agent render-domain: %s\n", err_msg());
out:
	vmm_placement_free(&pl);
	vmm_topology_free(t);
	if (spec_ok)
		model_spec_free(&spec);
	vmm_config_free(&cfg);
	return ret;
}
