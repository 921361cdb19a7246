/*
 * Anti-spoofing on every instance port: nftables `bridge` family rules that
 * the agent owns, one table per agent (AGENT_FILTER_TABLE_PREFIX + the
 * bridge), one chain per port. docs/agent.md "Port filters" says why
 * nftables and not libvirt's nwfilter, and where a security-group chain goes.
 *
 *   table bridge stratus-<bridge>
 *     map ports      tap name -> jump port-<tap>
 *     chain prerouting  hook prerouting: every frame a port sends, before
 *                    the bridge learns its source MAC (a spoofed frame
 *                    must not move another port's MAC) and before it goes
 *                    to the host (metadata, DHCP, DNS) or to another port
 *     chain port-<tap>  what this port may send; drops are counted per reason
 *
 * The text is generated from parsed values only (MAC and addresses through
 * their parsers, printed back by us; the tap name is derived from a
 * validated uuid), so no spec field reaches the ruleset as given. nft runs
 * each script as one transaction: a port is all there or not at all.
 */
#define LOG_TAG "agent"
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent/agent_priv.h"

extern char **environ;

const char *const agent_filter_names[] = {
	[AGENT_FILTER_NFTABLES] = "nftables",
	[AGENT_FILTER_NONE] = "none",
	[AGENT_FILTER_LAST] = NULL,
};

int agent_port_tap(const char *uuid, char out[AGENT_TAP_LEN])
{
	size_t o = strlen(AGENT_TAP_PREFIX);

	if (!uuid || !uuid_valid(uuid))
		return err_set(-EINVAL, "instance %s: not a uuid, no port name", uuid ? uuid : "");
	/* the uuid's first 8 and last 4 hex digits: readable, and distinct for
	 * uuids that share a prefix (the tests' structured ones) */
	memcpy(out, AGENT_TAP_PREFIX, o);
	for (int i = 0; i < 8; i++)
		out[o++] = (char)tolower((unsigned char)uuid[i]);
	for (int i = 32; i < 36; i++)
		out[o++] = (char)tolower((unsigned char)uuid[i]);
	out[o] = '\0';
	return 0;
}

int agent_port_parse(const char *uuid, const char *mac, const char *address,
		     struct agent_port *p)
{
	struct agent_port q = { 0 };
	unsigned v[6];
	char ip[INET_ADDRSTRLEN + 4], tail;
	const char *slash;
	uint32_t a;
	int n = 0;

	if (agent_port_tap(uuid, q.tap) < 0)
		return -EINVAL;
	if (!mac || strlen(mac) != 17 ||
	    sscanf(mac, "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
		   &tail) != 6)
		return err_set(-EINVAL, "instance %s: port mac '%s' is not a MAC address "
					"(expected six hex pairs like 52:54:00:12:34:56)",
			       uuid, mac ? mac : "");
	for (int i = 0; i < 6; i++) {
		if (!isxdigit((unsigned char)mac[3 * i]) || !isxdigit((unsigned char)mac[3 * i + 1]))
			return err_set(-EINVAL, "instance %s: port mac '%s' is not a MAC address",
				       uuid, mac);
		q.mac[i] = (unsigned char)v[i];
		n |= v[i];
	}
	if (q.mac[0] & 1 || !n)
		return err_set(-EINVAL, "instance %s: port mac %s is a %s address, not a port's",
			       uuid, mac, n ? "multicast" : "zero");
	slash = address ? strchr(address, '/') : NULL;
	if (!address || (size_t)(slash ? slash - address : (ptrdiff_t)strlen(address)) >= sizeof(ip))
		goto bad_ip;
	snprintf(ip, sizeof(ip), "%.*s", (int)(slash ? slash - address : (ptrdiff_t)strlen(address)),
		 address);
	if (inet_pton(AF_INET, ip, &q.ip) != 1)
		goto bad_ip;
	if (slash) {
		long plen;

		if (parse_long(slash + 1, 0, 32, &plen) < 0)
			goto bad_ip;
	}
	a = ntohl(q.ip.s_addr);
	if (a == 0 || a == 0xffffffffu || (a >> 28) == 0xe || (a >> 24) == 127)
		return err_set(-EINVAL, "instance %s: port address %s cannot be a port's own "
					"(zero, broadcast, multicast or loopback)",
			       uuid, address);
	/* the link-local address the kernel derives from the MAC (EUI-64) */
	q.ll6.s6_addr[0] = 0xfe;
	q.ll6.s6_addr[1] = 0x80;
	q.ll6.s6_addr[8] = q.mac[0] ^ 2;
	q.ll6.s6_addr[9] = q.mac[1];
	q.ll6.s6_addr[10] = q.mac[2];
	q.ll6.s6_addr[11] = 0xff;
	q.ll6.s6_addr[12] = 0xfe;
	q.ll6.s6_addr[13] = q.mac[3];
	q.ll6.s6_addr[14] = q.mac[4];
	q.ll6.s6_addr[15] = q.mac[5];
	*p = q;
	return 0;
bad_ip:
	return err_set(-EINVAL, "instance %s: port address '%s' is not an IPv4 address "
				"(expected A.B.C.D or A.B.C.D/PREFIX)",
		       uuid, address ? address : "");
}

int agent_filter_table(const char *bridge, char *out, size_t len)
{
	int n;

	for (const char *c = bridge ? bridge : ""; *c; c++)
		if (!isalnum((unsigned char)*c) && *c != '_' && *c != '-' && *c != '.')
			return err_set(-EINVAL, "bridge '%s': not a name nft accepts in a table name",
				       bridge);
	if (!bridge || !*bridge)
		return err_set(-EINVAL, "no bridge (vmm.bridge is \"\"): no port filters");
	n = snprintf(out, len, "%s%s", AGENT_FILTER_TABLE_PREFIX, bridge);
	if (n < 0 || (size_t)n >= len)
		return err_set(-ENAMETOOLONG, "bridge '%s': name too long", bridge);
	return 0;
}

/* ---- the ruleset ----------------------------------------------------------- */

/*
 * What a port may send, in order; every drop carries a counter and a
 * comment naming the reason (the names docs/agent.md lists; reconcile
 * checks a port chain by them). %M: the port's MAC, %I: its IPv4 address,
 * %L: its IPv6 link-local address, %K: the mark of verified frames.
 */
static const char *const port_rules[] = {
	"ether saddr != %M counter drop comment \"spoof-mac\"",
	"arp saddr ether != %M counter drop comment \"spoof-arp-mac\"",
	"arp operation request arp saddr ip 0.0.0.0 accept comment \"arp-probe\"",
	"arp saddr ip != %I counter drop comment \"spoof-arp-ip\"",
	"ether type arp meta mark set %K accept comment \"arp\"",
	"udp sport { 67, 547 } counter drop comment \"dhcp-server\"",
	"icmpv6 type nd-router-advert counter drop comment \"ra\"",
	"ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept "
	"comment \"dhcp-client\"",
	"ether type ip ip saddr != %I counter drop comment \"spoof-ip\"",
	"ip6 saddr :: icmpv6 type { nd-neighbor-solicit, mld2-listener-report } accept "
	"comment \"ip6-dad\"",
	"ether type ip6 ip6 saddr != %L counter drop comment \"spoof-ip6\"",
	/* a security-group chain goes here: "jump sg-<tap>" (docs/agent.md) */
	"ether type { ip, ip6 } meta mark set %K accept comment \"ip\"",
	"counter drop comment \"ethertype\"",
};

size_t agent_filter_port_rule_count(void)
{
	return ARRAY_SIZE(port_rules);
}

int agent_filter_port_rule_comment(size_t i, char *buf, size_t len)
{
	const char *c = i < ARRAY_SIZE(port_rules) ? strstr(port_rules[i], "comment \"") : NULL;
	const char *e = c ? strchr(c + 9, '"') : NULL;
	int n;

	if (!e)
		return -ENOENT;
	n = snprintf(buf, len, "%.*s", (int)(e - c - 9), c + 9);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static int put_rule(struct strbuf *sb, const char *tmpl, const struct agent_port *p,
		    uint32_t mark)
{
	char ip[INET_ADDRSTRLEN], ll[INET6_ADDRSTRLEN];
	int r = 0;

	inet_ntop(AF_INET, &p->ip, ip, sizeof(ip));
	inet_ntop(AF_INET6, &p->ll6, ll, sizeof(ll));
	for (const char *c = tmpl; *c && r == 0; c++) {
		if (*c != '%') {
			r = sb_append(sb, c, 1);
			continue;
		}
		switch (*++c) {
		case 'M':
			r = sb_printf(sb, "%02x:%02x:%02x:%02x:%02x:%02x", p->mac[0], p->mac[1],
				      p->mac[2], p->mac[3], p->mac[4], p->mac[5]);
			break;
		case 'I': r = sb_printf(sb, "%s", ip); break;
		case 'L': r = sb_printf(sb, "%s", ll); break;
		case 'K': r = sb_printf(sb, "0x%08x", mark); break;
		default: return err_set(-EINVAL, "port rule template: bad %%%c", *c);
		}
	}
	return r;
}

int agent_filter_base_script(const char *table, struct strbuf *sb)
{
	/* add+delete: the delete never fails, the table starts empty */
	return sb_printf(sb,
			 "add table bridge %1$s\n"
			 "delete table bridge %1$s\n"
			 "table bridge %1$s {\n"
			 "\tmap ports {\n\t\ttype ifname : verdict\n\t}\n"
			 "\tchain prerouting {\n"
			 "\t\ttype filter hook prerouting priority -300; policy accept;\n"
			 "\t\tiifname vmap @ports\n\t}\n"
			 "}\n",
			 table);
}

int agent_filter_port_script(const char *table, const struct agent_port *p, uint32_t mark,
			     struct strbuf *sb)
{
	int r;

	r = sb_printf(sb, "add chain bridge %1$s port-%2$s\nflush chain bridge %1$s port-%2$s\n",
		      table, p->tap);
	for (size_t i = 0; i < ARRAY_SIZE(port_rules) && r == 0; i++) {
		r = sb_printf(sb, "add rule bridge %s port-%s ", table, p->tap);
		if (r == 0)
			r = put_rule(sb, port_rules[i], p, mark);
		if (r == 0)
			r = sb_append(sb, "\n", 1);
	}
	if (r == 0) /* add+delete+add: the element points at this chain, exactly once */
		r = sb_printf(sb,
			      "add element bridge %1$s ports { \"%2$s\" : jump port-%2$s }\n"
			      "delete element bridge %1$s ports { \"%2$s\" }\n"
			      "add element bridge %1$s ports { \"%2$s\" : jump port-%2$s }\n",
			      table, p->tap);
	return r;
}

int agent_filter_unport_script(const char *table, const char *tap, struct strbuf *sb)
{
	return sb_printf(sb,
			 "add element bridge %1$s ports { \"%2$s\" : jump port-%2$s }\n"
			 "delete element bridge %1$s ports { \"%2$s\" }\n"
			 "add chain bridge %1$s port-%2$s\n"
			 "delete chain bridge %1$s port-%2$s\n",
			 table, tap);
}

/* ---- running nft ------------------------------------------------------------ */

/* Run NFT with ARGS (NULL-terminated, after argv[0]); SCRIPT (may be NULL)
 * on its stdin. *out (if given): stdout+stderr, malloc'd. <0 with err_msg()
 * carrying nft's own message when it fails. */
static int run_nft(const char *nft, const char *const *args, const char *script, char **out)
{
	const char *argv[8] = { nft };
	posix_spawn_file_actions_t fa;
	struct strbuf sb = { 0 };
	int in = -1, p[2] = { -1, -1 }, st = 0, r;
	size_t n = 1;
	pid_t pid;
	char buf[2048];
	ssize_t got;

	for (; args[n - 1] && n < ARRAY_SIZE(argv) - 1; n++)
		argv[n] = args[n - 1];
	argv[n] = NULL;
	in = script ? memfd_create("nft-script", MFD_CLOEXEC) : open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return err_sys(-errno, "nft: script file");
	if (script) {
		size_t len = strlen(script), off = 0;

		while (off < len) {
			got = write(in, script + off, len - off);
			if (got < 0) {
				r = err_sys(-errno, "nft: writing the script");
				close(in);
				return r;
			}
			off += (size_t)got;
		}
		lseek(in, 0, SEEK_SET);
	}
	if (pipe2(p, O_CLOEXEC) < 0) {
		r = err_sys(-errno, "nft: pipe");
		close(in);
		return r;
	}
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, in, 0);
	posix_spawn_file_actions_adddup2(&fa, p[1], 1);
	posix_spawn_file_actions_adddup2(&fa, p[1], 2);
	r = posix_spawnp(&pid, nft, &fa, NULL, (char *const *)(uintptr_t)argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(in);
	close(p[1]);
	if (r != 0) {
		close(p[0]);
		return err_set(-r, "nft: cannot run '%s': %s (install nftables, or set "
				   "agent.network.filter: none)", nft, strerror(r));
	}
	while ((got = read(p[0], buf, sizeof(buf))) > 0 || (got < 0 && errno == EINTR))
		if (got > 0 && sb.len < (16u << 20))
			sb_append(&sb, buf, (size_t)got);
	close(p[0]);
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		char *msg = sb_steal(&sb);
		size_t l = msg ? strlen(msg) : 0;

		while (l && (msg[l - 1] == '\n' || msg[l - 1] == ' '))
			msg[--l] = '\0';
		r = err_set(-EIO, "nft %s failed: %.400s", args[0], msg && *msg ? msg : "?");
		free(msg);
		return r;
	}
	if (out)
		*out = sb_steal(&sb);
	sb_free(&sb);
	return 0;
}

int agent_filter_run(const char *nft, const char *script)
{
	static const char *const args[] = { "-f", "/dev/stdin", NULL };

	return run_nft(nft, args, script, NULL);
}

/* ---- what the table holds ---------------------------------------------------- */

void agent_filter_state_free(struct agent_filter_state *s)
{
	if (!s)
		return;
	json_decref(s->doc);
	memset(s, 0, sizeof(*s));
}

int agent_filter_state_read(const char *nft, const char *table, struct agent_filter_state *s)
{
	const char *args[] = { "-j", "list", "table", "bridge", table, NULL };
	char *out = NULL;
	json_t *doc;
	int r;

	memset(s, 0, sizeof(*s));
	r = run_nft(nft, args, NULL, &out);
	if (r < 0) {
		/* a missing table is a state (after a host restart), not an error */
		if (r == -EIO && strstr(err_msg(), "No such file or directory")) {
			err_clear();
			return 0;
		}
		return r;
	}
	doc = json_loads(out, 0, NULL);
	free(out);
	if (!doc || !json_is_array(json_object_get(doc, "nftables"))) {
		json_decref(doc);
		return err_set(-EIO, "nft -j list table bridge %s: output is not nft JSON", table);
	}
	s->doc = doc;
	s->present = true;
	return 0;
}

static json_t *items(const struct agent_filter_state *s)
{
	return json_object_get(s->doc, "nftables");
}

/* The rules of CHAIN, in order, as their comments; returns how many. */
static size_t chain_comments(const struct agent_filter_state *s, const char *chain,
			     const char **out, size_t max, bool *exists)
{
	size_t i, n = 0;
	json_t *it;

	*exists = false;
	json_array_foreach(items(s), i, it) {
		json_t *c = json_object_get(it, "chain"), *ru = json_object_get(it, "rule");

		if (c && json_is_string(json_object_get(c, "name")) &&
		    strcmp(json_string_value(json_object_get(c, "name")), chain) == 0)
			*exists = true;
		if (ru && json_is_string(json_object_get(ru, "chain")) &&
		    strcmp(json_string_value(json_object_get(ru, "chain")), chain) == 0) {
			if (n < max)
				out[n] = json_string_value(json_object_get(ru, "comment"));
			n++;
		}
	}
	return n;
}

/* Does the base chain NAME exist with its vmap rule? */
static bool base_ok(const struct agent_filter_state *s, const char *name)
{
	const char *c[4];
	bool exists;

	return chain_comments(s, name, c, 4, &exists) == 1 && exists;
}

bool agent_filter_base_ok(const struct agent_filter_state *s)
{
	bool map = false;
	size_t i;
	json_t *it;

	if (!s->present)
		return false;
	json_array_foreach(items(s), i, it) {
		json_t *m = json_object_get(it, "map");

		if (m && json_is_string(json_object_get(m, "name")) &&
		    strcmp(json_string_value(json_object_get(m, "name")), "ports") == 0)
			map = true;
	}
	return map && base_ok(s, "prerouting");
}

/* The map element of TAP: jumps to its chain? */
static bool element_ok(const struct agent_filter_state *s, const char *tap)
{
	char chain[AGENT_TAP_LEN + 8];
	size_t i, k;
	json_t *it, *e;

	snprintf(chain, sizeof(chain), "port-%s", tap);
	json_array_foreach(items(s), i, it) {
		json_t *m = json_object_get(it, "map");

		if (!m || !json_is_string(json_object_get(m, "name")) ||
		    strcmp(json_string_value(json_object_get(m, "name")), "ports") != 0)
			continue;
		json_array_foreach(json_object_get(m, "elem"), k, e) {
			const char *key = json_string_value(json_array_get(e, 0));
			json_t *v = json_object_get(json_object_get(json_array_get(e, 1), "jump"),
						    "target");

			if (key && strcmp(key, tap) == 0)
				return json_is_string(v) && strcmp(json_string_value(v), chain) == 0;
		}
	}
	return false;
}

bool agent_filter_port_ok(const struct agent_filter_state *s, const char *tap)
{
	const char *c[ARRAY_SIZE(port_rules) + 1];
	char chain[AGENT_TAP_LEN + 8];
	bool exists;
	size_t n;

	if (!s->present || !element_ok(s, tap))
		return false;
	snprintf(chain, sizeof(chain), "port-%s", tap);
	n = chain_comments(s, chain, c, ARRAY_SIZE(c), &exists);
	if (!exists || n != ARRAY_SIZE(port_rules))
		return false;
	for (size_t i = 0; i < n; i++) {
		char want[32];

		if (agent_filter_port_rule_comment(i, want, sizeof(want)) < 0 || !c[i] ||
		    strcmp(c[i], want) != 0)
			return false;
	}
	return true;
}

int agent_filter_port_taps(const struct agent_filter_state *s, char (**taps)[AGENT_TAP_LEN],
			   size_t *n)
{
	char (*v)[AGENT_TAP_LEN] = NULL;
	size_t i, k = 0;
	json_t *it;

	json_array_foreach(items(s), i, it) {
		const char *name = json_string_value(json_object_get(json_object_get(it, "chain"),
								      "name"));
		void *nv;

		if (!name || strncmp(name, "port-", 5) != 0 || strlen(name + 5) >= AGENT_TAP_LEN)
			continue;
		nv = realloc(v, (k + 1) * sizeof(*v));
		if (!nv) {
			free(v);
			return err_set(-ENOMEM, "out of memory");
		}
		v = nv;
		snprintf(v[k++], AGENT_TAP_LEN, "%s", name + 5);
	}
	*taps = v;
	*n = k;
	return 0;
}

int agent_filter_drops(const struct agent_filter_state *s, const char *tap, const char *reason,
		       uint64_t *packets)
{
	char chain[AGENT_TAP_LEN + 8];
	size_t i, k;
	json_t *it, *ex;

	snprintf(chain, sizeof(chain), "port-%s", tap);
	json_array_foreach(items(s), i, it) {
		json_t *ru = json_object_get(it, "rule");
		const char *c = json_string_value(json_object_get(ru, "comment"));

		if (!ru || !c || strcmp(c, reason) != 0 ||
		    strcmp(json_string_value(json_object_get(ru, "chain")) ?: "", chain) != 0)
			continue;
		json_array_foreach(json_object_get(ru, "expr"), k, ex) {
			json_t *cnt = json_object_get(ex, "counter");

			if (cnt) {
				*packets = (uint64_t)json_integer_value(json_object_get(cnt, "packets"));
				return 0;
			}
		}
	}
	return err_set(-ENOENT, "port %s: no counter for %s", tap, reason);
}

/* ---- the agent's ports --------------------------------------------------------- */

/* The agent's table, false when it filters no ports (filter: none, or no
 * bridge: no NIC). */
static bool filtering(const struct agent *a, char table[AGENT_FILTER_TABLE_MAX])
{
	if (a->cfg->network.filter != AGENT_FILTER_NFTABLES || !a->vmm_cfg->bridge ||
	    !*a->vmm_cfg->bridge)
		return false;
	return agent_filter_table(a->vmm_cfg->bridge, table, AGENT_FILTER_TABLE_MAX) == 0;
}

static uint32_t port_mark(const struct agent *a)
{
	return (uint32_t)a->cfg->network.port_mark;
}

/* A row whose port may exist (or is about to): it has its address and MAC,
 * past the build's network step. In error or deleting too: its domain may
 * still run until the cleanup that removes the row, then the filter. */
bool agent_row_has_port(const struct store_instance *row)
{
	if (!row->mac || !row->address)
		return false;
	switch (row->state) {
	case INST_BUILDING:
		return row->step && strcmp(row->step, "accepted") != 0;
	case INST_ACTIVE:
	case INST_STOPPED:
	case INST_REBOOTING:
	case INST_DELETING:
	case INST_ERROR:
	case INST_REBUILDING:
	case INST_MIGRATING:
	case INST_RESIZING:
	case INST_VERIFY_RESIZE:
	case INST_REVERTING:
		return true;
	case INST_SCHEDULING:
	case INST_DELETED:
	case INST_STATE_LAST:
		break;
	}
	return false;
}

struct fix_ctx {
	struct agent *a;
	const char *table;
	const struct agent_filter_state *st; /* NULL: every port is missing */
	const char *skip;                    /* the uuid being applied: not "restored" */
	struct strbuf script;
	char (*live)[AGENT_TAP_LEN];
	size_t n_live;
	unsigned restored;
	int r;
};

static int fix_row(const struct store_instance *row, void *ud)
{
	struct fix_ctx *c = ud;
	struct agent_port p;
	void *nv;

	if (!agent_row_has_port(row))
		return 0;
	if (agent_port_parse(row->uuid, row->mac, row->address, &p) < 0) {
		log_error("port filter: instance=%s: %s", row->uuid, err_msg());
		return 0;
	}
	nv = realloc(c->live, (c->n_live + 1) * sizeof(*c->live));
	if (!nv)
		return c->r = err_set(-ENOMEM, "out of memory");
	c->live = nv;
	memcpy(c->live[c->n_live++], p.tap, AGENT_TAP_LEN);
	if ((c->st && agent_filter_port_ok(c->st, p.tap)) || (c->skip && !strcmp(c->skip, row->uuid)))
		return 0;
	log_warn("port filter: port %s of instance=%s was missing or changed, restoring it "
		 "mac=%s address=%s", p.tap, row->uuid, row->mac, row->address);
	c->restored++;
	if ((c->r = agent_filter_port_script(c->table, &p, port_mark(c->a), &c->script)) < 0)
		return c->r;
	return 0;
}

static bool is_live(const struct fix_ctx *c, const char *tap)
{
	for (size_t i = 0; i < c->n_live; i++)
		if (strcmp(c->live[i], tap) == 0)
			return true;
	return false;
}

/* Check the table against the store and fix it in one transaction.
 * Caller holds filter_lock. */
static int filter_reconcile_locked(struct agent *a, const char *table, const char *skip)
{
	struct agent_filter_state st;
	struct fix_ctx c = { .a = a, .table = table, .skip = skip };
	char (*taps)[AGENT_TAP_LEN] = NULL;
	size_t n_taps = 0;
	unsigned removed = 0;
	int r;

	r = agent_filter_state_read(a->cfg->network.nft, table, &st);
	if (r < 0)
		return r;
	if (!agent_filter_base_ok(&st)) {
		if (st.present)
			log_warn("port filter: table bridge %s was changed outside Stratus, "
				 "rebuilding it with every port", table);
		r = agent_filter_base_script(table, &c.script);
	} else {
		c.st = &st;
	}
	if (r == 0)
		r = store_instance_foreach(a->store, fix_row, &c);
	if (r == 0)
		r = c.r;
	if (r == 0 && c.st && agent_filter_port_taps(&st, &taps, &n_taps) == 0) {
		for (size_t i = 0; i < n_taps && r == 0; i++) {
			if (is_live(&c, taps[i]))
				continue;
			log_info("port filter: removing the filter of port %s (no instance)", taps[i]);
			removed++;
			r = agent_filter_unport_script(table, taps[i], &c.script);
		}
	}
	if (r == 0 && c.script.len)
		r = agent_filter_run(a->cfg->network.nft, c.script.buf);
	if (r == 0) {
		pthread_mutex_lock(&a->m_lock);
		a->m.filters_restored += c.restored;
		a->m.filter_ports = c.n_live;
		pthread_mutex_unlock(&a->m_lock);
		if (c.restored || removed)
			log_info("port filter reconcile table=%s ports=%zu restored=%u removed=%u",
				 table, c.n_live, c.restored, removed);
	}
	free(taps);
	free(c.live);
	sb_free(&c.script);
	agent_filter_state_free(&st);
	return r;
}

int agent_filter_reconcile(struct agent *a)
{
	char table[AGENT_FILTER_TABLE_MAX];
	int r;

	if (!filtering(a, table))
		return 0;
	pthread_mutex_lock(&a->filter_lock);
	r = filter_reconcile_locked(a, table, NULL);
	pthread_mutex_unlock(&a->filter_lock);
	if (r < 0)
		return err_prefix(r, "port filter reconcile");
	return agent_sg_reconcile(a); /* the security groups on top (secgroup.c) */
}

/* The base chain is there with its vmap rule: one small listing (the whole
 * table's is slow with many ports; reconcile reads that). */
bool agent_filter_base_quick_ok(const char *nft, const char *table)
{
	const char *args[] = { "list", "chain", "bridge", table, "prerouting", NULL };
	char *out = NULL;
	bool ok;

	if (run_nft(nft, args, NULL, &out) < 0) {
		err_clear();
		return false;
	}
	ok = strstr(out, "hook prerouting") && strstr(out, "iifname vmap @ports");
	free(out);
	return ok;
}

int agent_filter_apply(struct agent *a, const char *uuid, const char *mac, const char *address)
{
	char table[AGENT_FILTER_TABLE_MAX];
	struct strbuf sb = { 0 };
	struct agent_port p;
	int r = 0;

	if (!filtering(a, table))
		return 0;
	if ((r = agent_port_parse(uuid, mac, address, &p)) < 0)
		return r;
	pthread_mutex_lock(&a->filter_lock);
	if (!agent_filter_base_quick_ok(a->cfg->network.nft, table)) {
		/* no table yet (or broken): build it with every port of the store */
		r = filter_reconcile_locked(a, table, uuid);
	}
	if (r == 0)
		r = agent_filter_port_script(table, &p, port_mark(a), &sb);
	if (r == 0)
		r = agent_filter_run(a->cfg->network.nft, sb.buf);
	pthread_mutex_unlock(&a->filter_lock);
	sb_free(&sb);
	if (r < 0)
		return err_prefix(r, "instance %s: port filter on %s", uuid, p.tap);
	pthread_mutex_lock(&a->m_lock);
	a->m.filters_applied++;
	pthread_mutex_unlock(&a->m_lock);
	log_info("port filter applied instance=%s port=%s mac=%s address=%s", uuid, p.tap, mac,
		 address);
	return 0;
}

void agent_filter_remove(struct agent *a, const char *uuid)
{
	char table[AGENT_FILTER_TABLE_MAX], tap[AGENT_TAP_LEN];
	struct agent_filter_state st;
	struct strbuf sb = { 0 };
	int r;

	if (!filtering(a, table) || agent_port_tap(uuid, tap) < 0)
		return;
	pthread_mutex_lock(&a->filter_lock);
	r = agent_filter_state_read(a->cfg->network.nft, table, &st);
	if (r == 0 && st.present && (r = agent_filter_unport_script(table, tap, &sb)) == 0)
		r = agent_filter_run(a->cfg->network.nft, sb.buf);
	pthread_mutex_unlock(&a->filter_lock);
	agent_filter_state_free(&st);
	sb_free(&sb);
	if (r < 0)
		log_warn("port filter not removed instance=%s port=%s: %s (reconcile retries)", uuid,
			 tap, err_msg());
	agent_sg_forget(a, uuid); /* and its security group chains */
}

int agent_filter_init(struct agent *a)
{
	char table[AGENT_FILTER_TABLE_MAX];
	struct agent_filter_state st;
	FILE *f;
	int r;

	if (!filtering(a, table))
		return 0;
	/* accepted TCP sockets carry the mark of their SYN: how the metadata
	 * service knows a connection came through a filtered port */
	f = fopen("/proc/sys/net/ipv4/tcp_fwmark_accept", "w");
	if (!f || fputs("1\n", f) < 0 || fclose(f) != 0) {
		r = err_sys(-errno, "agent.network.filter: cannot set net.ipv4.tcp_fwmark_accept=1");
		if (f)
			fclose(f);
		return r;
	}
	r = agent_filter_state_read(a->cfg->network.nft, table, &st);
	agent_filter_state_free(&st);
	if (r < 0)
		return err_prefix(r, "agent.network.filter: nftables");
	return 0;
}
