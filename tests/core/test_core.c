/* Unit tests for core/: parsing, uuid, time, strbuf, errors, config. */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "core/core.h"

static void test_parse_long(void **state)
{
	long v = 42;

	(void)state;
	assert_int_equal(parse_long("123", 0, 1000, &v), 0);
	assert_int_equal(v, 123);
	assert_int_equal(parse_long("-5", -10, 10, &v), 0);
	assert_int_equal(v, -5);
	v = 7;
	assert_int_equal(parse_long("", 0, 10, &v), -EINVAL);
	assert_int_equal(parse_long("12x", 0, 100, &v), -EINVAL);
	assert_int_equal(parse_long(" 1", 0, 100, &v), -EINVAL);
	assert_int_equal(parse_long("101", 0, 100, &v), -ERANGE);
	assert_int_equal(parse_long("99999999999999999999999", 0, 100, &v), -ERANGE);
	assert_int_equal(v, 7); /* untouched on failure */
}

static void test_parse_size_duration(void **state)
{
	uint64_t sz = 0;
	int64_t ms = 0;
	bool b = false;

	(void)state;
	assert_int_equal(parse_size("512M", &sz), 0);
	assert_true(sz == 512ULL << 20);
	assert_int_equal(parse_size("2GiB", &sz), 0);
	assert_true(sz == 2ULL << 30);
	assert_int_equal(parse_size("1024", &sz), 0);
	assert_true(sz == 1024);
	assert_int_equal(parse_size("12Q", &sz), -EINVAL);
	assert_int_equal(parse_size("-1", &sz), -EINVAL);
	assert_int_equal(parse_size("99999999999T", &sz), -ERANGE);
	assert_int_equal(parse_duration_ms("500ms", &ms), 0);
	assert_int_equal(ms, 500);
	assert_int_equal(parse_duration_ms("5m", &ms), 0);
	assert_int_equal(ms, 300000);
	assert_int_equal(parse_duration_ms("30", &ms), 0);
	assert_int_equal(ms, 30000);
	assert_int_equal(parse_duration_ms("3 days", &ms), -EINVAL);
	assert_int_equal(parse_bool("yes", &b), 0);
	assert_true(b);
	assert_int_equal(parse_bool("maybe", &b), -EINVAL);
}

static void test_uuid_time(void **state)
{
	char a[UUID_STRLEN], b[UUID_STRLEN], ts[RFC3339_STRLEN];

	(void)state;
	uuid_generate_str(a);
	uuid_generate_str(b);
	assert_true(uuid_valid(a));
	assert_string_not_equal(a, b);
	assert_int_equal(a[14], '4');
	assert_non_null(strchr("89ab", a[19]));
	assert_int_equal(strlen(a), 36);
	for (int i = 0; i < 36; i++)
		if (i == 8 || i == 13 || i == 18 || i == 23)
			assert_int_equal(a[i], '-');
		else
			assert_non_null(strchr("0123456789abcdef", a[i]));
	assert_false(uuid_valid("0b6f4b1e-5c7a-4c1e-9a53-0d1f2a3b4c5"));
	assert_false(uuid_valid("0b6f4b1e_5c7a-4c1e-9a53-0d1f2a3b4c5d"));
	time_rfc3339_now(ts);
	assert_true(time_rfc3339_valid(ts));
	assert_true(time_rfc3339_valid("2026-11-23T09:15:08Z"));
	assert_true(time_rfc3339_valid("2026-11-23T09:15:08.5+01:00"));
	assert_false(time_rfc3339_valid("2026-11-23 09:15:08"));
	assert_false(time_rfc3339_valid("2026-11-23T09:15:08Zjunk"));
}

/* v7: the wall clock's ms in the first 48 bits, version 7, the variant;
 * later uuids sort after earlier ones (the B-trees keyed by them append) */
static void test_uuid_v7(void **state)
{
	char prev[UUID_STRLEN], u[UUID_STRLEN], hex12[13];
	int64_t t0 = time_wall_ms(), t1;
	long long ms;

	(void)state;
	uuid_generate_time_str(prev);
	t1 = time_wall_ms();
	assert_true(uuid_valid(prev));
	assert_int_equal(prev[14], '7');
	assert_non_null(strchr("89ab", prev[19]));
	memcpy(hex12, prev, 8);
	memcpy(hex12 + 8, prev + 9, 4);
	hex12[12] = '\0';
	ms = strtoll(hex12, NULL, 16);
	assert_true(ms >= t0 && ms <= t1);
	for (int i = 0; i < 2000; i++) {
		uuid_generate_time_str(u);
		/* same ms: the random bits decide; a later ms always sorts after */
		assert_true(strncmp(u, prev, 13) >= 0);
		assert_string_not_equal(u, prev);
		memcpy(prev, u, sizeof(u));
	}
}

/* The uuids' pool of random bits is not inherited: a forked child's next
 * uuid is not its parent's next one. */
static void test_uuid_fork(void **state)
{
	char mine[UUID_STRLEN], child[UUID_STRLEN] = "";
	int fd[2];
	pid_t pid;

	(void)state;
	uuid_generate_str(mine); /* the pool is filled */
	assert_int_equal(pipe(fd), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		uuid_generate_str(child);
		_exit(write(fd[1], child, sizeof(child)) == (ssize_t)sizeof(child) ? 0 : 1);
	}
	close(fd[1]);
	assert_int_equal(read(fd[0], child, sizeof(child)), (ssize_t)sizeof(child));
	close(fd[0]);
	waitpid(pid, NULL, 0);
	uuid_generate_str(mine);
	assert_true(uuid_valid(child));
	assert_string_not_equal(mine, child);
}

/* The second's text is kept between calls: it must still be gmtime's. */
static void test_rfc3339_now(void **state)
{
	char ts[RFC3339_STRLEN], want[RFC3339_STRLEN];

	(void)state;
	for (int i = 0; i < 3; i++) {
		struct timespec t;
		struct tm tm;
		time_t before;

		clock_gettime(CLOCK_REALTIME, &t);
		before = t.tv_sec;
		time_rfc3339_now(ts);
		clock_gettime(CLOCK_REALTIME, &t);
		if (t.tv_sec != before) { /* a second boundary in between: again */
			i--;
			continue;
		}
		gmtime_r(&before, &tm);
		snprintf(want, sizeof(want), "%04d-%02d-%02dT%02d:%02d:%02d.",
			 (tm.tm_year + 1900) % 10000, (tm.tm_mon + 1) % 100, tm.tm_mday % 100,
			 tm.tm_hour % 100, tm.tm_min % 100, tm.tm_sec % 100);
		assert_int_equal(strlen(ts), 24);
		assert_memory_equal(ts, want, 20);
		assert_true(ts[23] == 'Z' && strspn(ts + 20, "0123456789") == 3);
		assert_true(time_rfc3339_valid(ts));
		usleep(600 * 1000); /* the next round is (usually) in another second */
	}
}

static void test_strbuf_cap(void **state)
{
	struct strbuf sb = { .max = 16 };

	(void)state;
	assert_int_equal(sb_printf(&sb, "%s", "0123456789"), 0);
	assert_int_equal(sb_append(&sb, "abcdef", 6), -E2BIG);
	assert_int_equal(sb.len, 10);
	assert_int_equal(sb_append(&sb, "abcde", 5), 0);
	char *s = sb_steal(&sb);
	assert_string_equal(s, "0123456789abcde");
	free(s);
	sb_free(&sb);
	sb_free(NULL);
}

static void test_err(void **state)
{
	(void)state;
	assert_int_equal(err_set(-EINVAL, "image %s: bad", "x"), -EINVAL);
	assert_string_equal(err_msg(), "image x: bad");
	err_prefix(-EINVAL, "instance %d", 3);
	assert_string_equal(err_msg(), "instance 3: image x: bad");
	err_sys(-ENOENT, "open %s", "/nope");
	assert_string_equal(err_msg(), "open /nope: No such file or directory");
}

struct t_sub {
	long n;
};
enum t_mode { T_AUTO, T_KVM, T_QEMU, T_MODE_LAST };
struct t_cfg {
	char *name;
	long port;
	bool flag;
	enum t_mode mode;
	uint64_t size;
	int64_t timeout;
	double ratio;
	struct cfg_strlist list;
	struct cfg_map props;
	struct t_sub sub;
};
static const char *const modes[] = {
	[T_AUTO] = "auto", [T_KVM] = "kvm", [T_QEMU] = "qemu", [T_MODE_LAST] = NULL,
};
static const struct cfg_field sub_fields[] = {
	{ .key = "n", .type = CFG_INT, .offset = offsetof(struct t_sub, n), .min = 0, .max = 9,
	  .def = "3" },
	{ 0 },
};
static const struct cfg_field t_fields[] = {
	{ .key = "name", .type = CFG_STRING, .offset = offsetof(struct t_cfg, name), .required = true },
	{ .key = "port", .type = CFG_INT, .offset = offsetof(struct t_cfg, port), .min = 1,
	  .max = 65535, .def = "8080" },
	{ .key = "flag", .type = CFG_BOOL, .offset = offsetof(struct t_cfg, flag) },
	{ .key = "mode", .type = CFG_ENUM, .offset = CFG_ENUM_OFFSET(struct t_cfg, mode), .names = modes,
	  .def = "auto" },
	{ .key = "size", .type = CFG_SIZE, .offset = offsetof(struct t_cfg, size), .def = "1G" },
	{ .key = "timeout", .type = CFG_DURATION, .offset = offsetof(struct t_cfg, timeout),
	  .def = "30s" },
	{ .key = "ratio", .type = CFG_DOUBLE, .offset = offsetof(struct t_cfg, ratio), .dmin = 0,
	  .dmax = 16, .def = "1.5" },
	{ .key = "list", .type = CFG_STRLIST, .offset = offsetof(struct t_cfg, list) },
	{ .key = "props", .type = CFG_MAP, .offset = offsetof(struct t_cfg, props) },
	{ .key = "sub", .type = CFG_SECTION, .offset = offsetof(struct t_cfg, sub), .sub = sub_fields },
	{ 0 },
};

static int load(const char *yaml, struct t_cfg *c)
{
	const struct cfg_section s[] = {
		{ .name = "agent", .fields = t_fields, .dst = c },
		{ 0 },
	};

	memset(c, 0, sizeof(*c));
	return cfg_load_string("t.yaml", yaml, strlen(yaml), s);
}

static void test_config_ok(void **state)
{
	struct t_cfg c;

	(void)state;
	assert_int_equal(load("agent:\n  name: h1\n  mode: qemu\n  list: [a, b]\n"
			      "  props: {x: '1', y: two}\n  sub: {n: 7}\nbus: {ignored: 1}\n",
			      &c),
			 0);
	assert_string_equal(c.name, "h1");
	assert_int_equal(c.port, 8080);
	assert_int_equal(c.mode, T_QEMU);
	assert_true(c.size == 1ULL << 30);
	assert_int_equal(c.timeout, 30000);
	assert_true(c.ratio == 1.5);
	assert_int_equal(c.list.n, 2);
	assert_string_equal(c.list.v[1], "b");
	assert_string_equal(cfg_map_get(&c.props, "y"), "two");
	assert_null(cfg_map_get(&c.props, "z"));
	assert_int_equal(c.sub.n, 7);
	cfg_free(t_fields, &c);
}

static void test_config_errors(void **state)
{
	static const struct {
		const char *yaml, *msg;
	} cases[] = {
		{ "agent:\n  name: a\n  port: 0\n",
		  "t.yaml:3:9: agent.port: expected an integer from 1 to 65535, got '0'" },
		{ "agent:\n  port: 1\n", "t.yaml:2:3: agent: missing required key 'name'" },
		{ "agent:\n  name: a\n  name: b\n", "t.yaml:3:3: agent.name: duplicate key" },
		{ "agent:\n  name: [a]\n", "t.yaml:2:9: agent.name: expected a string, got a list" },
		{ "agent:\n  name: a\n  sub: {n: 10}\n",
		  "t.yaml:3:12: agent.sub.n: expected an integer from 0 to 9, got '10'" },
		{ "agent:\n  name:\n", "t.yaml:2:8: agent.name: expected a string, got nothing" },
		{ "agent:\n  name: a\n  ratio: 17\n",
		  "t.yaml:3:10: agent.ratio: expected a number from 0 to 16, got '17'" },
		{ "- a\n", "t.yaml:1:1: expected a mapping of sections (log, bus, agent, ...), got a list" },
	};
	struct t_cfg c;

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		assert_int_equal(load(cases[i].yaml, &c), -EINVAL);
		assert_string_equal(err_msg(), cases[i].msg);
		cfg_free(t_fields, &c);
	}
}

static void test_net_addr_port(void **state)
{
	static const struct {
		const char *s;
		long min, max;
		unsigned flags;
		int want;
		const char *addr;
		int port;
	} cases[] = {
		{ "127.0.0.1:9180", 0, 65535, 0, 0, "127.0.0.1", 9180 },
		{ "0.0.0.0:0", 0, 65535, 0, 0, "0.0.0.0", 0 },
		{ "10.0.0.5:65535", 0, 65535, 0, 0, "10.0.0.5", 65535 },
		{ "10.0.0.5", 1, 65535, NET_PORT_OPTIONAL, 0, "10.0.0.5", 0 },
		{ "10.0.0.5:9092", 1, 65535, NET_PORT_OPTIONAL, 0, "10.0.0.5", 9092 },
		/* missing port */
		{ "10.0.0.5", 0, 65535, 0, -EINVAL, NULL, 0 },
		{ "", 0, 65535, 0, -EINVAL, NULL, 0 },
		{ "10.0.0.5:", 0, 65535, 0, -ERANGE, NULL, 0 },
		/* port out of range or junk */
		{ "10.0.0.5:65536", 0, 65535, 0, -ERANGE, NULL, 0 },
		{ "10.0.0.5:0", 1, 65535, NET_PORT_OPTIONAL, -ERANGE, NULL, 0 },
		{ "10.0.0.5:-1", 0, 65535, 0, -ERANGE, NULL, 0 },
		{ "10.0.0.5:80x", 0, 65535, 0, -ERANGE, NULL, 0 },
		{ "10.0.0.5: 80", 0, 65535, 0, -ERANGE, NULL, 0 },
		/* the port is checked before the address */
		{ "junk:abc", 0, 65535, 0, -ERANGE, NULL, 0 },
		/* not an IPv4 address */
		{ "localhost:80", 0, 65535, 0, -EADDRNOTAVAIL, NULL, 0 },
		{ "10.0.0:80", 0, 65535, 0, -EADDRNOTAVAIL, NULL, 0 },
		{ "10.0.0.256:80", 0, 65535, 0, -EADDRNOTAVAIL, NULL, 0 },
		{ ":80", 0, 65535, 0, -EADDRNOTAVAIL, NULL, 0 },
		{ "", 1, 65535, NET_PORT_OPTIONAL, -EADDRNOTAVAIL, NULL, 0 },
		{ "bus.example", 1, 65535, NET_PORT_OPTIONAL, -EADDRNOTAVAIL, NULL, 0 },
		/* no caller accepts IPv6, bracketed or not */
		{ "[::1]:80", 0, 65535, 0, -EADDRNOTAVAIL, NULL, 0 },
		{ "::1:80", 0, 65535, 0, -EADDRNOTAVAIL, NULL, 0 },
		/* an address text longer than any IPv4 address could be */
		{ "1111111111111111111111111111111111111111111111111111111111111111:80", 0, 65535, 0,
		  -EINVAL, NULL, 0 },
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct sockaddr_in sa = { .sin_port = htons(4242) };
		char text[INET_ADDRSTRLEN];
		int r = net_addr_port_parse(cases[i].s, cases[i].min, cases[i].max, cases[i].flags,
					    &sa);

		if (r != cases[i].want)
			fail_msg("'%s': got %d, want %d (%s)", cases[i].s, r, cases[i].want,
				 err_msg());
		if (r < 0) {
			assert_int_equal(ntohs(sa.sin_port), 4242); /* untouched */
			assert_true(strlen(err_msg()) > 0);
			continue;
		}
		assert_int_equal(sa.sin_family, AF_INET);
		assert_int_equal(ntohs(sa.sin_port), cases[i].port);
		assert_non_null(inet_ntop(AF_INET, &sa.sin_addr, text, sizeof(text)));
		assert_string_equal(text, cases[i].addr);
	}
	net_addr_port_parse("10.0.0.5:70000", 1, 65534, 0, &(struct sockaddr_in){ 0 });
	assert_string_equal(err_msg(), "'10.0.0.5:70000': port '70000': expected 1 to 65534");
	net_addr_port_parse("db:5432", 0, 65535, 0, &(struct sockaddr_in){ 0 });
	assert_string_equal(err_msg(), "'db:5432': 'db' is not an IPv4 address");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_long),
		cmocka_unit_test(test_parse_size_duration),
		cmocka_unit_test(test_uuid_time),
		cmocka_unit_test(test_uuid_v7),
		cmocka_unit_test(test_uuid_fork),
		cmocka_unit_test(test_rfc3339_now),
		cmocka_unit_test(test_strbuf_cap),
		cmocka_unit_test(test_err),
		cmocka_unit_test(test_config_ok),
		cmocka_unit_test(test_config_errors),
		cmocka_unit_test(test_net_addr_port),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
