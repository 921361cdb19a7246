/*
 * The instance spec (DESIGN.md "The instance spec"): the body of
 * instance.build and the input of the agent's operator subcommands
 * (render-domain, seed). Parsed and validated once here; vmm, images,
 * metadata and agent read the struct.
 */
#ifndef STRATUS_MODEL_MODEL_H
#define STRATUS_MODEL_MODEL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/core.h"

#define SPEC_USER_DATA_MAX (64 * 1024) /* decoded bytes, like Nova */
#define SPEC_MAX_KEYS 64
#define SPEC_MAX_META 128

struct spec_kv {
	char *key;
	char *val;
};

struct spec_flavor {
	char *name;
	long vcpus;
	long ram_mb;
	long disk_gb;
	struct spec_kv *extra_specs;
	size_t n_extra_specs;
};

/* A file that goes with an image (Nova's kernel_id/ramdisk_id): fetched
 * and verified like the image itself. */
struct spec_blob {
	char *url;
	char *checksum;
};

struct spec_image {
	char *name;        /* may be NULL */
	char *url;         /* http, https or file */
	char *checksum;    /* "sha256:HEX" or "sha512:HEX", lower-case hex */
	char *disk_format; /* "qcow2" or "raw" */
	long min_disk_gb;
	/* optional direct kernel boot, for images that are a bare root file
	 * system: all NULL, or kernel (+ initrd, cmdline) set */
	struct spec_blob kernel, initrd;
	char *cmdline;
};

struct spec_ssh_key {
	char *name;
	char *key;
};

struct spec_network {
	bool present;
	char *mac;      /* 52:54:00:12:34:56 */
	char *address;  /* 10.0.0.5/24 */
	char *gateway;  /* 10.0.0.1, may be NULL */
	char **dns;     /* NULL-terminated */
	size_t n_dns;
};

enum spec_seed { SPEC_SEED_NOCLOUD, SPEC_SEED_CONFIGDRIVE, SPEC_SEED_NONE, SPEC_SEED_LAST };
extern const char *const spec_seed_names[]; /* NULL-terminated, by enum value */

/* Instance lifecycle (DESIGN.md): scheduling -> building -> active <-> stopped,
 * active -> rebooting -> active, * -> deleting -> deleted, * -> error.
 * Names are what events, stratusctl and the stores use. */
enum instance_state {
	INST_SCHEDULING,
	INST_BUILDING,
	INST_ACTIVE,
	INST_STOPPED,
	INST_REBOOTING,
	INST_DELETING,
	INST_DELETED,
	INST_ERROR,
	INST_STATE_LAST
};
extern const char *const instance_state_names[]; /* NULL-terminated */
/* Returns 0, or -EINVAL for an unknown name. */
int instance_state_parse(const char *name, enum instance_state *out);

struct instance_spec {
	char uuid[UUID_STRLEN];
	char *name;              /* free text, may hold any character */
	char *hostname;          /* RFC 1123; derived from name when absent */
	char *project;
	char *availability_zone; /* default "nova" */
	long launch_index;
	struct spec_flavor flavor;
	struct spec_image image;
	unsigned char *user_data; /* decoded; NULL when none */
	size_t user_data_len;
	struct spec_ssh_key *ssh_keys;
	size_t n_ssh_keys;
	struct spec_kv *metadata;
	size_t n_metadata;
	enum spec_seed seed;
	struct spec_network network;
};

/*
 * Parse and validate a spec from a JSON object. Unknown keys are ignored
 * (instance.build carries request fields beside the spec). On error returns
 * -EINVAL with err_msg() naming the field: "flavor.vcpus: expected an
 * integer from 1 to 1024". *out is untouched on failure; on success the
 * caller frees it with model_spec_free().
 */
int model_spec_parse(json_t *obj, struct instance_spec *out);
/* Same, from a JSON file (at most 1 MiB). */
int model_spec_parse_file(const char *path, struct instance_spec *out);
/* Back to JSON (user_data base64-encoded); returns a new reference. */
json_t *model_spec_to_json(const struct instance_spec *s);
void model_spec_free(struct instance_spec *s);
/* The value of a flavor extra spec, or NULL. */
const char *model_spec_extra(const struct instance_spec *s, const char *key);

/* ---- flavor extra specs (Nova's names and values) ---------------------- */

/* The extra specs that shape placement and the guest, by enum value. */
enum model_flavor_spec {
	MODEL_SPEC_CPU_POLICY,        /* hw:cpu_policy */
	MODEL_SPEC_THREAD_POLICY,     /* hw:cpu_thread_policy */
	MODEL_SPEC_EMULATOR_POLICY,   /* hw:emulator_threads_policy */
	MODEL_SPEC_MEM_PAGE_SIZE,     /* hw:mem_page_size */
	MODEL_SPEC_NUMA_NODES,        /* hw:numa_nodes */
	MODEL_SPEC_LAST
};
extern const char *const model_flavor_spec_keys[]; /* NULL-terminated, by enum value */

enum model_cpu_policy { MODEL_CPU_SHARED, MODEL_CPU_DEDICATED, MODEL_CPU_POLICY_LAST };
extern const char *const model_cpu_policy_names[];
enum model_thread_policy { MODEL_THREAD_PREFER, MODEL_THREAD_ISOLATE, MODEL_THREAD_REQUIRE,
			   MODEL_THREAD_POLICY_LAST };
extern const char *const model_thread_policy_names[];
enum model_emu_policy { MODEL_EMU_SHARE, MODEL_EMU_ISOLATE, MODEL_EMU_POLICY_LAST };
extern const char *const model_emu_policy_names[];
/* hw:mem_page_size; NONE is the absent key (its name is ""). Besides the
 * names, 2M and 2048 mean 2MB, 1G and 1048576 mean 1GB. */
enum model_page_req { MODEL_PAGE_REQ_NONE, MODEL_PAGE_REQ_SMALL, MODEL_PAGE_REQ_LARGE,
		      MODEL_PAGE_REQ_ANY, MODEL_PAGE_REQ_2MB, MODEL_PAGE_REQ_1GB,
		      MODEL_PAGE_REQ_LAST };
extern const char *const model_page_req_names[];

#define MODEL_MAX_NUMA_NODES 8 /* hw:numa_nodes */

struct model_flavor_policy {
	enum model_cpu_policy cpu;       /* default shared */
	enum model_thread_policy thread; /* default prefer */
	enum model_emu_policy emu;       /* default share */
	enum model_page_req page;        /* default NONE */
	int numa_nodes;                  /* 0 = not given */
};

/*
 * Read F's hw:cpu_policy, hw:cpu_thread_policy, hw:emulator_threads_policy,
 * hw:mem_page_size and hw:numa_nodes (other keys are ignored). An invalid
 * value fails with -EINVAL and the accepted values: "flavor m1.x:
 * hw:cpu_policy: invalid value 'fast' (accepted: shared, dedicated)";
 * thread and emulator isolate policies need hw:cpu_policy=dedicated. On
 * failure *out is untouched and, when BAD is not NULL, *BAD names the
 * extra spec at fault (for callers that word the error their own way).
 */
int model_flavor_policy_parse(const struct spec_flavor *f, struct model_flavor_policy *out,
			      enum model_flavor_spec *bad);

#endif
