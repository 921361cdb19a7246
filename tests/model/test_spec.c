/* The instance spec: parse, defaults, round trip, and every rejection. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "model/model.h"

static json_t *basic(void)
{
	json_error_t je;
	json_t *j = json_load_file("tests/data/spec-basic.json", 0, &je);

	assert_non_null(j);
	return j;
}

static void test_parse_basic(void **state)
{
	struct instance_spec s;

	(void)state;
	assert_int_equal(model_spec_parse_file("tests/data/spec-basic.json", &s), 0);
	assert_string_equal(s.uuid, "0b6f4b1e-5c7a-4c1e-9a53-0d1f2a3b4c5d");
	assert_string_equal(s.project, "acme");
	assert_int_equal(s.flavor.vcpus, 2);
	assert_string_equal(model_spec_extra(&s, "hw:cpu_policy"), "dedicated");
	assert_null(model_spec_extra(&s, "hw:numa_nodes"));
	assert_int_equal(s.seed, SPEC_SEED_NOCLOUD);
	assert_string_equal((const char *)s.user_data, "#cloud-config\nruncmd:\n  - echo hello\n");
	assert_int_equal(s.n_ssh_keys, 1);
	assert_string_equal(s.network.dns[0], "10.0.0.1");
	assert_string_equal(s.metadata[0].key, "role");

	/* round trip: to JSON and back gives the same spec */
	json_t *j = model_spec_to_json(&s);
	struct instance_spec t;

	assert_non_null(j);
	assert_int_equal(model_spec_parse(j, &t), 0);
	assert_string_equal(t.name, s.name);
	assert_int_equal(t.user_data_len, s.user_data_len);
	assert_memory_equal(t.user_data, s.user_data, s.user_data_len);
	assert_string_equal(t.network.mac, s.network.mac);
	json_decref(j);
	model_spec_free(&t);
	model_spec_free(&s);
	model_spec_free(NULL);
}

static void test_defaults(void **state)
{
	json_t *j = basic();
	struct instance_spec s;

	(void)state;
	json_object_del(j, "hostname");
	json_object_del(j, "availability_zone");
	json_object_del(j, "network");
	json_object_del(j, "seed");
	json_object_set_new(j, "name", json_string("Web <1> & \"friends\""));
	assert_int_equal(model_spec_parse(j, &s), 0);
	assert_string_equal(s.hostname, "web-1-friends");
	assert_string_equal(s.availability_zone, "nova");
	assert_false(s.network.present);
	assert_string_equal(s.name, "Web <1> & \"friends\"");
	model_spec_free(&s);
	json_decref(j);
}

static void set_path(json_t *j, const char *path, json_t *v)
{
	char buf[128];
	char *dot;

	snprintf(buf, sizeof(buf), "%s", path);
	dot = strchr(buf, '.');
	if (dot) {
		*dot = '\0';
		j = json_object_get(j, buf);
		path = dot + 1;
		snprintf(buf, sizeof(buf), "%s", path);
	}
	if (v)
		json_object_set_new(j, buf, v);
	else
		json_object_del(j, buf);
}

static void test_rejects(void **state)
{
	static char big[70000];
	static const struct {
		const char *path;
		const char *json; /* NULL: delete */
		const char *msg;
	} cases[] = {
		{ "uuid", "\"nope\"",
		  "uuid: expected a UUID like 0b6f4b1e-5c7a-4c1e-9a53-0d1f2a3b4c5d, got 'nope'" },
		{ "name", NULL, "name: missing" },
		{ "name", "\"\"", "name: must not be empty" },
		{ "project", "\"a b\"", "project: expected 1 to 64 of A-Z a-z 0-9 _ . -, got 'a b'" },
		{ "flavor.vcpus", "0", "flavor.vcpus: expected an integer from 1 to 1024, got 0" },
		{ "flavor.vcpus", "\"2\"", "flavor.vcpus: expected an integer from 1 to 1024" },
		{ "flavor.extra_specs", "{\"hw:cpu_policy\": 1}",
		  "flavor.extra_specs: hw:cpu_policy: expected a string" },
		{ "flavor", NULL, "flavor: missing" },
		{ "image.url", "\"ftp://x/y\"",
		  "image.url: expected an http://, https:// or file:// URL, got 'ftp://x/y'" },
		{ "image.checksum", "\"md5:abc\"",
		  "image.checksum: expected sha256:<64 hex digits> or sha512:<128 hex digits>, got 'md5:abc'" },
		{ "image.disk_format", "\"vmdk\"",
		  "image.disk_format: expected one of qcow2, raw, got 'vmdk'" },
		{ "user_data", "\"not base64!\"", "user_data: expected base64" },
		{ "seed", "\"floppy\"", "seed: expected one of nocloud, configdrive, none, got 'floppy'" },
		{ "hostname", "\"-bad\"", "hostname: expected an RFC 1123 host name, got '-bad'" },
		{ "network.mac", "\"52:54:00:zz:34:56\"",
		  "network.mac: expected a MAC like 52:54:00:12:34:56, got '52:54:00:zz:34:56'" },
		{ "network.address", "\"10.0.0.5\"",
		  "network.address: expected an IPv4 address with prefix like 10.0.0.5/24, got '10.0.0.5'" },
		{ "ssh_keys", "[{\"name\": \"k\"}]", "ssh_keys[0].key: missing" },
		{ "metadata", "[1]", "metadata: expected an object of strings" },
		{ "image.properties", "{\"hw_firmware_type\": \"efi\"}",
		  "image.properties: image debian-12: hw_firmware_type: invalid value 'efi' (accepted: bios, uefi)" },
		{ "image.properties", "{\"hw_video_model\": \"vga\"}",
		  "image.properties: image debian-12: unknown property 'hw_video_model' (accepted: hw_firmware_type, os_secure_boot, hw_machine_type, hw_disk_bus, hw_vif_model, hw_qemu_guest_agent, os_type)" },
		{ "image.properties", "{\"hw_disk_bus\": 1}",
		  "image.properties: hw_disk_bus: expected a string" },
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		json_t *j = basic();
		struct instance_spec s;

		memset(&s, 0x5a, sizeof(s));
		set_path(j, cases[i].path, cases[i].json ? json_loads(cases[i].json, JSON_DECODE_ANY, NULL) : NULL);
		assert_int_equal(model_spec_parse(j, &s), -EINVAL);
		assert_string_equal(err_msg(), cases[i].msg);
		assert_int_equal(((unsigned char *)&s)[0], 0x5a); /* untouched */
		json_decref(j);
	}

	/* user-data above 64 KiB decoded */
	json_t *j = basic();
	struct instance_spec s;
	unsigned char *raw = calloc(1, 65 * 1024);
	char *b64 = base64_encode(raw, 65 * 1024);

	json_object_set_new(j, "user_data", json_string(b64));
	assert_int_equal(model_spec_parse(j, &s), -EINVAL);
	assert_string_equal(err_msg(), "user_data: larger than 65536 bytes");
	free(raw);
	free(b64);
	json_decref(j);
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	j = basic();
	json_object_set_new(j, "name", json_string(big));
	assert_int_equal(model_spec_parse(j, &s), -EINVAL);
	assert_string_equal(err_msg(), "name: longer than 255 characters");
	json_decref(j);
}

/* Glance properties: parsed, kept by the round trip, read by model_image_props_parse. */
static void test_image_properties(void **state)
{
	json_t *j = basic(), *back;
	struct instance_spec s, t;
	struct model_image_props p;

	(void)state;
	json_object_set_new(json_object_get(j, "image"), "properties",
			    json_pack("{s:s, s:s, s:s}", "hw_firmware_type", "uefi", "hw_disk_bus", "scsi",
				      "os_secure_boot", "required"));
	assert_int_equal(model_spec_parse(j, &s), 0);
	assert_int_equal(s.image.n_properties, 3);
	back = model_spec_to_json(&s);
	assert_int_equal(model_spec_parse(back, &t), 0);
	assert_int_equal(model_image_props_parse(t.image.name, t.image.properties, t.image.n_properties,
						 &p), 0);
	assert_int_equal(p.firmware, MODEL_FW_UEFI);
	assert_int_equal(p.disk_bus, MODEL_BUS_SCSI);
	assert_int_equal(p.secure_boot, MODEL_SB_REQUIRED);
	assert_int_equal(p.machine, MODEL_MACHINE_Q35); /* secure boot's default */
	assert_int_equal(p.vif_model, MODEL_VIF_VIRTIO);
	assert_false(p.guest_agent);
	assert_int_equal(p.os_type, MODEL_OS_LINUX);
	/* none: every default */
	assert_int_equal(model_image_props_parse("x", NULL, 0, &p), 0);
	assert_int_equal(p.firmware, MODEL_FW_BIOS);
	assert_int_equal(p.machine, MODEL_MACHINE_PC);
	json_decref(back);
	json_decref(j);
	model_spec_free(&t);
	model_spec_free(&s);
}

static void test_base64(void **state)
{
	unsigned char *out;
	size_t n;

	(void)state;
	assert_int_equal(base64_decode("aGk=", 10, &out, &n), 0);
	assert_int_equal(n, 2);
	assert_memory_equal(out, "hi", 2);
	free(out);
	assert_int_equal(base64_decode("aGk", 10, &out, &n), -EINVAL);
	assert_int_equal(base64_decode("a=Gk", 10, &out, &n), -EINVAL);
	assert_int_equal(base64_decode("aGVsbG8=", 2, &out, &n), -E2BIG);
	char *e = base64_encode((const unsigned char *)"hello", 5);
	assert_string_equal(e, "aGVsbG8=");
	free(e);
}

/* The flavor extra specs: defaults, every value, aliases, and rejections
 * naming the key at fault. */
static void test_flavor_policy(void **state)
{
	struct spec_kv kv[3];
	struct spec_flavor f = { .name = (char *)"m1.x", .vcpus = 2, .ram_mb = 1024,
				 .extra_specs = kv };
	struct model_flavor_policy p;
	enum model_flavor_spec bad = MODEL_SPEC_LAST;

	(void)state;
	assert_int_equal(model_flavor_policy_parse(&f, &p, NULL), 0);
	assert_int_equal(p.cpu, MODEL_CPU_SHARED);
	assert_int_equal(p.thread, MODEL_THREAD_PREFER);
	assert_int_equal(p.emu, MODEL_EMU_SHARE);
	assert_int_equal(p.page, MODEL_PAGE_REQ_NONE);
	assert_int_equal(p.numa_nodes, 0);

	kv[0] = (struct spec_kv){ (char *)"hw:cpu_policy", (char *)"dedicated" };
	kv[1] = (struct spec_kv){ (char *)"hw:mem_page_size", (char *)"2M" };
	kv[2] = (struct spec_kv){ (char *)"hw:numa_nodes", (char *)"2" };
	f.n_extra_specs = 3;
	assert_int_equal(model_flavor_policy_parse(&f, &p, NULL), 0);
	assert_int_equal(p.cpu, MODEL_CPU_DEDICATED);
	assert_int_equal(p.page, MODEL_PAGE_REQ_2MB);
	assert_int_equal(p.numa_nodes, 2);

	kv[1].val = (char *)"3MB";
	assert_int_equal(model_flavor_policy_parse(&f, &p, &bad), -EINVAL);
	assert_int_equal(bad, MODEL_SPEC_MEM_PAGE_SIZE);
	assert_string_equal(err_msg(), "flavor m1.x: hw:mem_page_size: invalid value '3MB' "
			    "(accepted: small, large, any, 2MB, 1GB)");
	assert_int_equal(p.page, MODEL_PAGE_REQ_2MB); /* untouched */

	kv[0].val = (char *)"shared";
	kv[1] = (struct spec_kv){ (char *)"hw:cpu_thread_policy", (char *)"isolate" };
	assert_int_equal(model_flavor_policy_parse(&f, &p, &bad), -EINVAL);
	assert_int_equal(bad, MODEL_SPEC_THREAD_POLICY);
	assert_string_equal(err_msg(), "flavor m1.x: hw:cpu_thread_policy=isolate needs "
			    "hw:cpu_policy=dedicated");

	kv[0].val = (char *)"fast";
	assert_int_equal(model_flavor_policy_parse(&f, &p, &bad), -EINVAL);
	assert_int_equal(bad, MODEL_SPEC_CPU_POLICY);
	assert_string_equal(err_msg(), "flavor m1.x: hw:cpu_policy: invalid value 'fast' "
			    "(accepted: shared, dedicated)");

	kv[0].val = (char *)"dedicated";
	kv[2].val = (char *)"9";
	assert_int_equal(model_flavor_policy_parse(&f, &p, &bad), -EINVAL);
	assert_int_equal(bad, MODEL_SPEC_NUMA_NODES);
	assert_string_equal(err_msg(), "flavor m1.x: hw:numa_nodes: invalid value '9' "
			    "(accepted: an integer from 1 to 8)");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_basic),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_rejects),
		cmocka_unit_test(test_base64),
		cmocka_unit_test(test_image_properties),
		cmocka_unit_test(test_flavor_policy),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
