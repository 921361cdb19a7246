/*
 * stratus-agent host-info and render-domain: what the agent sees of this
 * host, and the domain XML it would boot for an instance spec (built by
 * agent_domain_xml, the build's define step's function).
 */
#define LOG_TAG "agent"
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "agent/agent_priv.h"
#include "agent/commands.h"

int agent_cmd_host_info(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "sysfs", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	static const char usage[] = "usage: stratus-agent host-info [-c CONFIG] [--sysfs ROOT]\n";
	struct vmm_config cfg = { 0 };
	const struct cfg_section sections[] = {
		{ .name = "vmm", .fields = vmm_config_fields, .dst = &cfg },
		{ 0 },
	};
	const char *sysfs = NULL, *config = NULL;
	struct vmm_topology *t = NULL;
	json_t *j;
	int c, r;

	optind = 1;
	while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			config = optarg;
			break;
		case 's':
			sysfs = optarg;
			break;
		case 'h':
			fputs(usage, stdout);
			return 0;
		default:
			fputs(usage, stderr);
			return 2;
		}
	}
	if (optind != argc) {
		fputs(usage, stderr);
		return 2;
	}
	/* the PCI devices the config's vmm.pci_alias declares, with why a
	 * device is unusable */
	r = config ? cfg_load_file(config, sections) : vmm_config_init(&cfg);
	if (r == 0)
		r = vmm_config_check(&cfg);
	if (r == 0)
		r = vmm_topology_load(sysfs ? sysfs : cfg.sysfs_root, &t);
	if (r == 0 && config)
		r = vmm_pci_scan(sysfs ? sysfs : cfg.sysfs_root, &cfg, t);
	vmm_config_free(&cfg);
	if (r < 0) {
		vmm_topology_free(t);
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

/* What the agent would boot for the spec in spec_path: fit on the
 * topology, the agent's file names, agent_domain_xml. Prints the XML;
 * <0 with err_msg(). */
static int render_domain(const char *spec_path, const struct vmm_config *cfg, bool have_cfg,
			 const char *sysfs, const char *cmdline, struct agent_domain_files files)
{
	struct instance_spec spec;
	struct vmm_topology *t = NULL;
	struct vmm_placement pl = { 0 };
	enum md_seed_format seed_fmt;
	bool with_seed;
	_cleanup_free_ char *disk = NULL, *seed = NULL, *log = NULL, *xml = NULL;
	int r;

	r = model_spec_parse_file(spec_path, &spec);
	if (r < 0)
		return r;
	r = vmm_topology_load(sysfs ? sysfs : cfg->sysfs_root, &t);
	if (r < 0)
		goto out;
	r = vmm_pci_scan(sysfs ? sysfs : cfg->sysfs_root, cfg, t);
	if (r < 0)
		goto out;
	r = vmm_fit(t, have_cfg ? cfg : NULL, NULL, &spec, &pl);
	if (r < 0)
		goto out;
	r = vmm_cpu_fit(t, cfg, vmm_accel_resolve(cfg->accel), &spec, &pl);
	if (r < 0)
		goto out;
	/* --cmdline stands for the image's cmdline (used with a kernel only) */
	if (cmdline) {
		free(spec.image.cmdline);
		spec.image.cmdline = strdup(cmdline);
	}
	/* the paths the agent uses (docs/agent.md); a seed disk as the build's
	 * seed step decides */
	with_seed = md_seed_format_of_spec(&spec, &seed_fmt) == 0;
	disk = agent_instance_file(cfg, spec.uuid, ".qcow2");
	log = agent_instance_file(cfg, spec.uuid, ".log");
	if (with_seed)
		seed = agent_instance_file(cfg, spec.uuid, ".seed.iso");
	if (!disk || !log || (with_seed && !seed) || (cmdline && !spec.image.cmdline)) {
		r = err_set(-ENOMEM, "out of memory");
		goto out;
	}
	files.disk = disk;
	files.seed = seed;
	files.console_log = log;
	r = agent_domain_xml(&spec, &pl, cfg, vmm_accel_resolve(cfg->accel), &files,
			     &xml);
	if (r == 0)
		fputs(xml, stdout);
out:
	vmm_placement_free(&pl);
	vmm_topology_free(t);
	model_spec_free(&spec);
	return r;
}

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
	const char *config = NULL, *sysfs = NULL, *accel = NULL, *cmdline = NULL;
	struct agent_domain_files files = { 0 };
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
			files.kernel = optarg;
			break;
		case 'i':
			files.initrd = optarg;
			break;
		case 'l':
			cmdline = optarg;
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
	if (r < 0 || (r = vmm_config_check(&cfg)) < 0)
		goto fail;
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
	r = render_domain(argv[optind], &cfg, config != NULL, sysfs, cmdline, files);
	if (r < 0)
		goto fail;
	ret = 0;
	goto out;
fail:
	fprintf(stderr, "stratus-agent render-domain: %s\n", err_msg());
out:
	vmm_config_free(&cfg);
	return ret;
}
