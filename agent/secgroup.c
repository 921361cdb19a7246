/*
 * Security groups on this host's ports: the rule compiler (groups in, nft
 * script out) and the agent's state of what the scheduler sent
 * (secgroup.apply, docs/scheduler.md), applied in the agent's bridge table
 * (netfilter.c owns the table and the anti-spoofing chains).
 *
 *   map sg_in / sg_out   tap name -> jump sg-<tap>-in / sg-<tap>-out, each one
 *                        rule: jump to the shared chains of the port's groups
 *   chain sg-forward     hook forward: port to port (iifname @sg_out,
 *                        then oifname @sg_in)
 *   chain sg-input       hook input: to the host; DHCP, DNS and metadata
 *                        always pass, then the sender's egress
 *   chain sg-output      hook output: from the host to a port's ingress
 *   set rg4-<group id>   the IPv4 addresses of a remote group's members
 *                        (rg6-: IPv6), updated in place
 *   set est4, est4p      the flows let through (their replies' tuples, with a
 *   (est6, est6p)        timeout): "established" and "related" without the
 *                        kernel's bridge conntrack (see below)
 *   chain sgc-<h>-in     per combination of groups (ports in the same groups
 *                        share it): established/related, ARP, DHCP replies,
 *                        ND, then the rules (accept), then drop (counted)
 *   chain sgc-<h>-out    ARP, established/related, ND, then the rules
 *                        (return: on to the receiver's ingress), then drop
 *
 * The anti-spoofing chains (prerouting -300) run first, so every address
 * matched here is the sending port's own (docs/agent.md "Security groups").
 *
 * Every value printed comes from a parser: rules through model_sg_rule_parse,
 * ids through uuid_valid, addresses through inet_pton.
 */
#define LOG_TAG "agent"
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "agent/agent_priv.h"
#include "agent/secgroup_priv.h"

/* ---- the compiler ----------------------------------------------------------- */

struct compile {
	const char *table;
	struct strbuf *chains, *sets;
	char (*taps)[AGENT_TAP_LEN];
	char **blocks;     /* per port (parallel to taps): its chains and elements */
	size_t n_taps;
	char **set_names;
	size_t n_sets;
	int r;
};

static int add_name(char ***v, size_t *n, const char *s)
{
	void *nv;

	for (size_t i = 0; i < *n; i++)
		if (strcmp((*v)[i], s) == 0)
			return 0;
	nv = realloc(*v, (*n + 1) * sizeof(**v));
	if (!nv)
		return err_set(-ENOMEM, "out of memory");
	*v = nv;
	if (!((*v)[*n] = strdup(s)))
		return err_set(-ENOMEM, "out of memory");
	(*n)++;
	return 0;
}

static void free_names(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* Flows: the bridge family has no conntrack on every kernel (no
 * nf_conntrack_bridge here), so the chains track their own: a packet a rule
 * lets through records the tuple of its reply (addresses, protocol, ports;
 * est4p/est6p: the address pair, for ICMP replies and errors), which later
 * matches as "established" and refreshes its timeout. Addresses are the
 * ports' own (the anti-spoofing chains run first). */
#define EST "flags dynamic,timeout; timeout 600s; size 65536;"
#define REC4 "update @est4 { ip daddr . ip saddr . meta l4proto . th dport . th sport } " \
	     "update @est4p { ip daddr . ip saddr }"
#define REC6 "update @est6 { ip6 daddr . ip6 saddr . meta l4proto . th dport . th sport } " \
	     "update @est6p { ip6 daddr . ip6 saddr }"
#define EST4 "ether type ip ip saddr . ip daddr . meta l4proto . th sport . th dport @est4 " \
	     "update @est4 { ip saddr . ip daddr . meta l4proto . th sport . th dport }"
#define EST6 "ether type ip6 ip6 saddr . ip6 daddr . meta l4proto . th sport . th dport @est6 " \
	     "update @est6 { ip6 saddr . ip6 daddr . meta l4proto . th sport . th dport }"
#define REL4 "icmp type { echo-reply, destination-unreachable, time-exceeded, parameter-problem } " \
	     "ip saddr . ip daddr @est4p"
#define REL6 "icmpv6 type { echo-reply, destination-unreachable, packet-too-big, time-exceeded, " \
	     "parameter-problem } ip6 saddr . ip6 daddr @est6p"

static const char *const base_rules =
	"add set bridge %1$s est4 { type ipv4_addr . ipv4_addr . inet_proto . inet_service . "
	"inet_service; " EST " }\n"
	"add set bridge %1$s est4p { type ipv4_addr . ipv4_addr; " EST " }\n"
	"add set bridge %1$s est6 { type ipv6_addr . ipv6_addr . inet_proto . inet_service . "
	"inet_service; " EST " }\n"
	"add set bridge %1$s est6p { type ipv6_addr . ipv6_addr; " EST " }\n"
	"add map bridge %1$s sg_in { type ifname : verdict; }\n"
	"add map bridge %1$s sg_out { type ifname : verdict; }\n"
	"add chain bridge %1$s sg-forward { type filter hook forward priority 0; policy accept; }\n"
	"flush chain bridge %1$s sg-forward\n"
	"add rule bridge %1$s sg-forward iifname vmap @sg_out\n"
	"add rule bridge %1$s sg-forward oifname vmap @sg_in\n"
	"add chain bridge %1$s sg-input { type filter hook input priority 0; policy accept; }\n"
	"flush chain bridge %1$s sg-input\n"
	"add rule bridge %1$s sg-input udp sport 68 udp dport 67 accept comment \"dhcp\"\n"
	"add rule bridge %1$s sg-input ether type ip meta l4proto { tcp, udp } th dport 53 " REC4
	" accept comment \"dns\"\n"
	"add rule bridge %1$s sg-input ether type ip ip daddr 169.254.169.254 tcp dport 80 " REC4
	" accept comment \"metadata\"\n"
	"add rule bridge %1$s sg-input iifname vmap @sg_out\n"
	"add chain bridge %1$s sg-output { type filter hook output priority 0; policy accept; }\n"
	"flush chain bridge %1$s sg-output\n"
	"add rule bridge %1$s sg-output oifname vmap @sg_in\n";

/* What every port's chains hold before the rules (comments: reconcile
 * counts the rules). */
static const char *const in_head[] = {
	EST4 " accept comment \"established\"",
	EST6 " accept comment \"established6\"",
	REL4 " accept comment \"related\"",
	REL6 " accept comment \"related6\"",
	"ether type arp accept comment \"arp\"",
	"udp sport 67 udp dport 68 accept comment \"dhcp\"",
	"icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert, "
	"mld-listener-query } accept comment \"nd\"",
};
static const char *const out_head[] = {
	"ether type arp return comment \"arp\"",
	EST4 " return comment \"established\"",
	EST6 " return comment \"established6\"",
	REL4 " return comment \"related\"",
	REL6 " return comment \"related6\"",
	"icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, "
	"mld2-listener-report } return comment \"nd\"",
};

/* The match and verdict of RULE (of group GID) in a port's chain. */
static int put_rule(struct strbuf *sb, const struct sg_rule *ru)
{
	bool in = ru->direction == SG_INGRESS, v6 = ru->ethertype == SG_IPV6;
	const char *ip = v6 ? "ip6" : "ip", *dir = in ? "saddr" : "daddr";
	int r = sb_printf(sb, "ether type %s", ip);

	if (r == 0 && ru->remote_ip_prefix[0])
		r = sb_printf(sb, " %s %s %s", ip, dir, ru->remote_ip_prefix);
	if (r == 0 && ru->remote_group[0])
		r = sb_printf(sb, " %s %s @rg%c-%s", ip, dir, v6 ? '6' : '4', ru->remote_group);
	switch (ru->protocol) {
	case SG_PROTO_TCP:
	case SG_PROTO_UDP: {
		const char *p = sg_protocol_names[ru->protocol];

		if (r == 0 && ru->port_min < 0)
			r = sb_printf(sb, " meta l4proto %s", p);
		else if (r == 0 && ru->port_min == ru->port_max)
			r = sb_printf(sb, " %s dport %ld", p, ru->port_min);
		else if (r == 0)
			r = sb_printf(sb, " %s dport %ld-%ld", p, ru->port_min, ru->port_max);
		break;
	}
	case SG_PROTO_ICMP: {
		const char *p = v6 ? "icmpv6" : "icmp";

		if (r == 0 && ru->port_min < 0)
			r = sb_printf(sb, " meta l4proto %s", v6 ? "ipv6-icmp" : "icmp");
		else if (r == 0)
			r = sb_printf(sb, " %s type %ld", p, ru->port_min);
		if (r == 0 && ru->port_max >= 0)
			r = sb_printf(sb, " %s code %ld", p, ru->port_max);
		break;
	}
	case SG_PROTO_ANY:
	case SG_PROTOCOL_LAST:
		break;
	}
	/* the reply of what passes is established from now on */
	if (r == 0)
		r = sb_printf(sb, " %s counter %s comment \"rule %s\"", v6 ? REC6 : REC4,
			      in ? "accept" : "return", ru->id[0] ? ru->id : "-");
	return r;
}

/* The group GID in the inputs of one project (P), or NULL. */
static const json_t *find_group(const json_t *p, const char *gid)
{
	size_t i;
	json_t *g;

	json_array_foreach(json_object_get(p, "groups"), i, g)
		if (json_is_string(json_object_get(g, "id")) &&
		    strcmp(json_string_value(json_object_get(g, "id")), gid) == 0)
			return g;
	return NULL;
}

/* The rules of DIRECTION of the port's groups into CHAIN. */
static int port_rules(struct compile *c, const json_t *p, const json_t *groups, const char *chain,
		      enum sg_direction dir, const char *uuid)
{
	const char *proj = json_string_value(json_object_get(p, "project"));
	size_t i, k;
	json_t *gid, *rj;
	int r = 0;

	json_array_foreach(groups, i, gid) {
		const char *id = json_string_value(gid);
		const json_t *g = id ? find_group(p, id) : NULL;

		if (!g)
			return err_set(-EINVAL, "project %s: port of instance %s: group %s: not in "
					       "the groups sent", proj, uuid, id ? id : "(not a string)");
		json_array_foreach(json_object_get(g, "rules"), k, rj) {
			struct sg_rule ru;

			if (model_sg_rule_parse(rj, &ru) < 0)
				return err_prefix(-EINVAL, "project %s: group %s: rule %zu", proj, id, k);
			if (ru.remote_group[0] && !uuid_valid(ru.remote_group))
				return err_set(-EINVAL, "project %s: group %s: rule %zu: remote_group: "
						       "expected a group id", proj, id, k);
			if (ru.direction != dir)
				continue;
			if (ru.remote_group[0]) {
				char set[80];

				snprintf(set, sizeof(set), "rg%c-%s", ru.ethertype == SG_IPV6 ? '6' : '4',
					 ru.remote_group);
				if ((r = add_name(&c->set_names, &c->n_sets, set)) < 0)
					return r;
			}
			r = sb_printf(c->chains, "add rule bridge %s %s ", c->table, chain);
			if (r == 0)
				r = put_rule(c->chains, &ru);
			if (r == 0)
				r = sb_append(c->chains, "\n", 1);
			if (r < 0)
				return r;
		}
	}
	return r;
}

/* The shared chains of one combination of groups: "sgc-<hash>-in/-out"
 * (FNV-1a of the project and the group ids, in order). Ports in the same
 * groups jump to the same chains, so a rule change rewrites them once. */
static int group_chains(struct compile *c, const json_t *p, const json_t *groups,
			const char *uuid, char in[32], char out[32])
{
	const char *proj = json_string_value(json_object_get(p, "project"));
	uint64_t h = 1469598103934665603ull;
	size_t i, before = c->n_sets;
	json_t *g;
	int r;

	for (const char *q = proj ? proj : ""; *q; q++)
		h = (h ^ (unsigned char)*q) * 1099511628211ull;
	json_array_foreach(groups, i, g)
		for (const char *q = json_string_value(g) ? json_string_value(g) : "?"; ; q++) {
			h = (h ^ (unsigned char)*q) * 1099511628211ull;
			if (!*q)
				break;
		}
	snprintf(in, 32, "sgc-%016llx-in", (unsigned long long)h);
	snprintf(out, 32, "sgc-%016llx-out", (unsigned long long)h);
	if ((r = add_name(&c->set_names, &c->n_sets, in)) < 0 || c->n_sets == before)
		return r; /* written already */
	r = sb_printf(c->chains, "add chain bridge %1$s %2$s\nflush chain bridge %1$s %2$s\n"
				 "add chain bridge %1$s %3$s\nflush chain bridge %1$s %3$s\n",
		      c->table, in, out);
	for (size_t k = 0; r == 0 && k < ARRAY_SIZE(in_head); k++)
		r = sb_printf(c->chains, "add rule bridge %s %s %s\n", c->table, in, in_head[k]);
	if (r == 0)
		r = port_rules(c, p, groups, in, SG_INGRESS, uuid);
	if (r == 0)
		r = sb_printf(c->chains, "add rule bridge %s %s counter drop comment \"sg-ingress\"\n",
			      c->table, in);
	for (size_t k = 0; r == 0 && k < ARRAY_SIZE(out_head); k++)
		r = sb_printf(c->chains, "add rule bridge %s %s %s\n", c->table, out, out_head[k]);
	if (r == 0)
		r = port_rules(c, p, groups, out, SG_EGRESS, uuid);
	if (r == 0)
		r = sb_printf(c->chains, "add rule bridge %s %s counter drop comment \"sg-egress\"\n",
			      c->table, out);
	return r;
}

/* A port: its two chains (a jump to its groups' shared chains) and their
 * map elements. */
static int port_chains(struct compile *c, const json_t *p, const json_t *port)
{
	const char *uuid = json_string_value(json_object_get(port, "uuid"));
	const json_t *groups = json_object_get(port, "groups");
	char tap[AGENT_TAP_LEN], in[AGENT_TAP_LEN + 8], out[AGENT_TAP_LEN + 8];
	char gin[32], gout[32];
	struct strbuf blk = { .max = SG_SCRIPT_MAX };
	void *nv, *nb;
	int r;

	if (agent_port_tap(uuid, tap) < 0 || !json_is_array(groups))
		return err_set(-EINVAL, "project %s: a port without a uuid or its groups",
			       json_string_value(json_object_get(p, "project")));
	if ((r = group_chains(c, p, groups, uuid, gin, gout)) < 0)
		return r;
	snprintf(in, sizeof(in), "sg-%s-in", tap);
	snprintf(out, sizeof(out), "sg-%s-out", tap);
	/* the element always names the port's own chain: a plain add is idempotent */
	r = sb_printf(&blk, "add chain bridge %1$s %2$s\nflush chain bridge %1$s %2$s\n"
				 "add rule bridge %1$s %2$s jump %3$s\n"
				 "add chain bridge %1$s %4$s\nflush chain bridge %1$s %4$s\n"
				 "add rule bridge %1$s %4$s jump %5$s\n"
				 "add element bridge %1$s sg_in { \"%6$s\" : jump %2$s }\n"
				 "add element bridge %1$s sg_out { \"%6$s\" : jump %4$s }\n",
		      c->table, in, gin, out, gout, tap);
	if (r < 0) {
		sb_free(&blk);
		return r;
	}
	nv = realloc(c->taps, (c->n_taps + 1) * sizeof(*c->taps));
	if (nv)
		c->taps = nv;
	nb = nv ? realloc(c->blocks, (c->n_taps + 1) * sizeof(*c->blocks)) : NULL;
	if (!nb) {
		sb_free(&blk);
		return err_set(-ENOMEM, "out of memory");
	}
	c->blocks = nb;
	c->blocks[c->n_taps] = sb_steal(&blk);
	memcpy(c->taps[c->n_taps++], tap, AGENT_TAP_LEN);
	return 0;
}

/* The members of set NAME (rg4-ID / rg6-ID) from every project's inputs:
 * "flush set", then one "add element" line when it has any. */
static int set_elements(struct compile *c, const json_t *projects, const char *name)
{
	struct strbuf el = { .max = SG_SCRIPT_MAX };
	bool v6 = name[2] == '6';
	const char *pk;
	json_t *p;
	int r = sb_printf(c->sets, "flush set bridge %s %s\n", c->table, name);

	json_object_foreach((json_t *)(uintptr_t)projects, pk, p) {
		const json_t *m = json_object_get(json_object_get(p, "members"), name + 4);
		size_t i;
		json_t *a;

		json_array_foreach(m, i, a) {
			unsigned char bin[16];
			char txt[INET6_ADDRSTRLEN];
			const char *s = json_string_value(a);

			if (r < 0)
				break;
			if (!s || inet_pton(v6 ? AF_INET6 : AF_INET, s, bin) != 1) {
				if (s && inet_pton(v6 ? AF_INET : AF_INET6, s, bin) == 1)
					continue; /* the other family's set */
				r = err_set(-EINVAL, "project %s: members of group %s: '%.64s' is not "
						     "an IP address", pk, name + 4, s ? s : "(not a string)");
				break;
			}
			inet_ntop(v6 ? AF_INET6 : AF_INET, bin, txt, sizeof(txt));
			r = sb_printf(&el, "%s%s", el.len ? ", " : "", txt);
		}
	}
	if (r == 0 && el.len)
		r = sb_printf(c->sets, "add element bridge %s %s { %s }\n", c->table, name, el.buf);
	sb_free(&el);
	return r;
}

struct sg_parts {
	struct strbuf head;  /* table, sets declared, base chains, shared chains */
	struct strbuf sets;  /* the members: flush + add element per set */
	char (*taps)[AGENT_TAP_LEN];
	char **blocks;       /* per tap: its chains and map elements */
	size_t n_taps;
	char **names;        /* the remote groups' sets and the shared chains (-in) */
	size_t n_names;
};

static void parts_free(struct sg_parts *pt)
{
	sb_free(&pt->head);
	sb_free(&pt->sets);
	for (size_t i = 0; i < pt->n_taps; i++)
		free(pt->blocks[i]);
	free(pt->blocks);
	free(pt->taps);
	free_names(pt->names, pt->n_names);
	memset(pt, 0, sizeof(*pt));
}

static int compile_parts(const char *table, const json_t *projects, struct sg_parts *pt)
{
	struct strbuf body = { .max = SG_SCRIPT_MAX };
	struct compile c = { .table = table, .chains = &body, .sets = &pt->sets };
	const char *pk;
	json_t *p;
	int r = 0;

	memset(pt, 0, sizeof(*pt));
	pt->head.max = pt->sets.max = SG_SCRIPT_MAX;
	json_object_foreach((json_t *)(uintptr_t)projects, pk, p) {
		size_t i;
		json_t *port;

		if (!json_is_array(json_object_get(p, "ports")) ||
		    !json_is_array(json_object_get(p, "groups"))) {
			r = err_set(-EINVAL, "project %s: expected ports and groups arrays", pk);
			break;
		}
		json_array_foreach(json_object_get(p, "ports"), i, port)
			if (r == 0)
				r = port_chains(&c, p, port);
		if (r < 0)
			break;
	}
	for (size_t i = 0; r == 0 && i < c.n_sets; i++)
		if (strncmp(c.set_names[i], "rg", 2) == 0)
			r = set_elements(&c, projects, c.set_names[i]);
	if (r == 0)
		r = sb_printf(&pt->head, "add table bridge %s\n", table);
	for (size_t i = 0; r == 0 && i < c.n_sets; i++)
		if (strncmp(c.set_names[i], "rg", 2) == 0)
			r = sb_printf(&pt->head, "add set bridge %s %s { type %s; }\n", table,
				      c.set_names[i], c.set_names[i][2] == '6' ? "ipv6_addr" : "ipv4_addr");
	if (r == 0)
		r = sb_printf(&pt->head, base_rules, table);
	if (r == 0 && body.len)
		r = sb_append(&pt->head, body.buf, body.len);
	sb_free(&body);
	pt->taps = c.taps;
	pt->blocks = c.blocks;
	pt->n_taps = c.n_taps;
	pt->names = c.set_names;
	pt->n_names = c.n_sets;
	if (r < 0)
		parts_free(pt);
	return r;
}

/*
 * Compile PROJECTS (project -> its secgroup.apply inputs) for TABLE: CHAINS
 * gets the table, the sets declared, the base chains, the shared chains of
 * every combination of groups and every port's chains and map elements;
 * SETS the members of every set (flushed and filled: run alone it changes
 * members in place). *taps and *set_names: what the script covers
 * (malloc'd; caller frees). -EINVAL naming the project, group and rule at
 * fault; nothing is written then.
 */
int agent_sg_compile(const char *table, const json_t *projects, struct strbuf *chains,
		     struct strbuf *sets, char (**taps)[AGENT_TAP_LEN], size_t *n_taps,
		     char ***set_names, size_t *n_sets)
{
	struct sg_parts pt;
	int r = compile_parts(table, projects, &pt);

	if (r < 0)
		return r;
	r = sb_append(chains, pt.head.buf, pt.head.len);
	for (size_t i = 0; r == 0 && i < pt.n_taps; i++)
		r = sb_append(chains, pt.blocks[i], strlen(pt.blocks[i]));
	if (r == 0 && pt.sets.len)
		r = sb_append(sets, pt.sets.buf, pt.sets.len);
	if (r == 0) {
		*taps = pt.taps;
		*n_taps = pt.n_taps;
		*set_names = pt.names;
		*n_sets = pt.n_names;
		pt.taps = NULL;
		pt.names = NULL;
		pt.n_names = 0;
	}
	parts_free(&pt);
	return r;
}

int agent_sg_script(const char *table, const json_t *projects, struct strbuf *out)
{
	struct strbuf sets = { .max = SG_SCRIPT_MAX };
	char (*taps)[AGENT_TAP_LEN] = NULL;
	char **names = NULL;
	size_t n_taps = 0, n_names = 0;
	int r = agent_sg_compile(table, projects, out, &sets, &taps, &n_taps, &names, &n_names);

	if (r == 0 && sets.len)
		r = sb_append(out, sets.buf, sets.len);
	free(taps);
	free_names(names, n_names);
	sb_free(&sets);
	return r;
}

/* ---- the agent's state ------------------------------------------------------- */

bool agent_sg_filtering(const struct agent *a, char table[AGENT_FILTER_TABLE_MAX])
{
	if (!a->sg || a->cfg->network.filter != AGENT_FILTER_NFTABLES || !a->vmm_cfg->bridge ||
	    !*a->vmm_cfg->bridge)
		return false;
	return agent_filter_table(a->vmm_cfg->bridge, table, AGENT_FILTER_TABLE_MAX) == 0;
}

static int sg_path(const struct agent *a, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/secgroups.json", a->cfg->state_dir);

	return n < 0 || (size_t)n >= len ? err_set(-ENAMETOOLONG, "state_dir: too long") : 0;
}

static int sg_save(const struct agent *a)
{
	char path[1024];
	char *text;
	int r;

	if ((r = sg_path(a, path, sizeof(path))) < 0)
		return r;
	text = json_dumps(a->sg->projects, JSON_COMPACT | JSON_SORT_KEYS);
	if (!text)
		return err_set(-ENOMEM, "out of memory");
	r = write_file_atomic(path, text, strlen(text), 0600);
	free(text);
	return r;
}

/* "add/delete" pairs: the stale ports' elements and chains, the stale sets. */
static int stale_script(const char *table, const struct agent_sg *old,
			char (*taps)[AGENT_TAP_LEN], size_t n_taps, char **names, size_t n_names,
			struct strbuf *sb)
{
	int r = 0;

	for (size_t i = 0; r == 0 && i < old->n_taps; i++) {
		bool keep = false;

		for (size_t k = 0; k < n_taps && !keep; k++)
			keep = strcmp(old->taps[i], taps[k]) == 0;
		for (int d = 0; r == 0 && !keep && d < 2; d++)
			r = sb_printf(sb, "add chain bridge %1$s sg-%2$s-%3$s\n"
					  "add element bridge %1$s sg_%3$s { \"%2$s\" : jump sg-%2$s-%3$s }\n"
					  "delete element bridge %1$s sg_%3$s { \"%2$s\" }\n"
					  "flush chain bridge %1$s sg-%2$s-%3$s\n"
					  "delete chain bridge %1$s sg-%2$s-%3$s\n",
				      table, old->taps[i], d ? "out" : "in");
	}
	for (size_t i = 0; r == 0 && i < old->sets.n; i++) {
		bool keep = false;

		for (size_t k = 0; k < n_names && !keep; k++)
			keep = strcmp(old->sets.v[i], names[k]) == 0;
		if (!keep && strncmp(old->sets.v[i], "sgc-", 4) == 0) {
			/* a shared chain pair: -in is listed, -out goes with it */
			size_t l = strlen(old->sets.v[i]);

			r = sb_printf(sb, "add chain bridge %1$s %2$s\ndelete chain bridge %1$s %2$s\n"
					  "add chain bridge %1$s %3$.*4$s-out\n"
					  "delete chain bridge %1$s %3$.*4$s-out\n",
				      table, old->sets.v[i], old->sets.v[i], (int)(l - 3));
		} else if (!keep) {
			r = sb_printf(sb, "add set bridge %1$s %2$s { type %3$s; }\n"
					  "delete set bridge %1$s %2$s\n", table, old->sets.v[i],
				      old->sets.v[i][2] == '6' ? "ipv6_addr" : "ipv4_addr");
		}
	}
	return r;
}

/* Is the port of instance UUID here (agent_row_has_port)? */
static bool port_here(struct agent *a, const char *uuid)
{
	struct store_instance row = { 0 };
	bool here;

	if (!a->store)
		return true; /* no store (a tool): every port sent */
	if (!uuid || store_instance_get(a->store, uuid, &row) < 0) {
		err_clear();
		return false;
	}
	here = agent_row_has_port(&row);
	store_instance_free(&row);
	return here;
}

/*
 * The saved inputs with only the ports that are here: a secgroup.apply
 * keyed by project may name a port before its migration's prepare made it,
 * or after an abort or the source's cleanup removed it (the views of other
 * hosts are computed apart from this host's store): its chains are made
 * when its row has a port and go with the row. A new reference; NULL when
 * out of memory.
 */
static json_t *present_projects(struct agent *a)
{
	json_t *out = json_object(), *p;
	const char *pk;

	json_object_foreach(a->sg->projects, pk, p) {
		json_t *cp = json_copy(p), *ports = json_array(), *port;
		size_t i;

		if (!out || !cp || !ports) {
			json_decref(cp);
			json_decref(ports);
			json_decref(out);
			return NULL;
		}
		json_array_foreach(json_object_get(p, "ports"), i, port)
			if (port_here(a, json_string_value(json_object_get(port, "uuid"))))
				json_array_append(ports, port);
		json_object_set_new(cp, "ports", ports);
		json_object_set_new(out, pk, cp);
	}
	return out;
}

bool agent_sg_ports_changed_locked(struct agent *a)
{
	json_t *p;
	const char *pk;
	size_t n = 0;

	json_object_foreach(a->sg->projects, pk, p) {
		json_t *port;
		size_t i;

		json_array_foreach(json_object_get(p, "ports"), i, port) {
			const char *uuid = json_string_value(json_object_get(port, "uuid"));
			char tap[AGENT_TAP_LEN];
			bool applied = false;

			if (!port_here(a, uuid))
				continue;
			n++;
			if (agent_port_tap(uuid, tap) < 0)
				continue;
			for (size_t k = 0; k < a->sg->n_taps && !applied; k++)
				applied = strcmp(a->sg->taps[k], tap) == 0;
			if (!applied)
				return true;
		}
	}
	return n != a->sg->n_taps;
}

/* Compile and run: the whole script, or only the members when the chains
 * are those last applied. Caller holds filter_lock. *members_only (may be
 * NULL): what it did. */
int agent_sg_apply_locked(struct agent *a, const char *table, bool *members_only)
{
	struct agent_sg *sg = a->sg;
	struct strbuf script = { .max = SG_SCRIPT_MAX }, all = { .max = SG_SCRIPT_MAX };
	struct sg_parts pt;
	json_t *present = present_projects(a);
	bool only = true;
	int r;

	if (!present)
		return err_set(-ENOMEM, "out of memory");
	r = compile_parts(table, present, &pt);
	json_decref(present);
	if (r < 0)
		return r;
	r = sb_append(&all, pt.head.buf, pt.head.len);
	/* what differs from the last applied: the shared part, new or changed ports */
	if (r == 0 && !(sg->applied && sg->head && strcmp(sg->head, pt.head.buf) == 0)) {
		only = false;
		r = sb_append(&script, pt.head.buf, pt.head.len);
	}
	for (size_t i = 0; r == 0 && i < pt.n_taps; i++) {
		bool same = false;

		for (size_t k = 0; sg->applied && k < sg->n_taps && !same; k++)
			same = strcmp(sg->taps[k], pt.taps[i]) == 0 && strcmp(sg->blocks[k], pt.blocks[i]) == 0;
		r = sb_append(&all, pt.blocks[i], strlen(pt.blocks[i]));
		if (r == 0 && !same) {
			only = false;
			r = sb_append(&script, pt.blocks[i], strlen(pt.blocks[i]));
		}
	}
	if (r == 0 && pt.sets.len)
		r = sb_append(&script, pt.sets.buf, pt.sets.len);
	if (r == 0) {
		size_t before = script.len;

		r = stale_script(table, sg, pt.taps, pt.n_taps, pt.names, pt.n_names, &script);
		if (script.len != before)
			only = false; /* ports or chains removed */
	}
	if (r == 0 && script.len)
		r = agent_filter_run(a->cfg->network.nft, script.buf);
	if (r < 0)
		goto out;
	free(sg->chains);
	sg->chains = sb_steal(&all);
	free(sg->head);
	sg->head = sb_steal(&pt.head);
	for (size_t i = 0; i < sg->n_taps; i++)
		free(sg->blocks[i]);
	free(sg->blocks);
	free(sg->taps);
	sg->taps = pt.taps;
	sg->blocks = pt.blocks;
	sg->n_taps = pt.n_taps;
	free_names(sg->sets.v, sg->sets.n);
	sg->sets.v = pt.names;
	sg->sets.n = pt.n_names;
	free(sg->members);
	sg->members = sb_steal(&pt.sets);
	sg->applied = true;
	memset(&pt, 0, sizeof(pt));
	if (members_only)
		*members_only = only;
	pthread_mutex_lock(&a->m_lock);
	a->m.sg_applies++;
	a->m.sg_ports = sg->n_taps;
	pthread_mutex_unlock(&a->m_lock);
out:
	parts_free(&pt);
	sb_free(&script);
	sb_free(&all);
	return r;
}

int agent_sg_init(struct agent *a)
{
	char path[1024];
	char *text = NULL;
	size_t len;
	int r;

	a->sg = calloc(1, sizeof(*a->sg));
	if (!a->sg)
		return err_set(-ENOMEM, "out of memory");
	if ((r = sg_path(a, path, sizeof(path))) < 0)
		return r;
	r = read_file(path, SG_SCRIPT_MAX, &text, &len);
	if (r == -ENOENT) {
		err_clear();
		a->sg->projects = json_object();
		return a->sg->projects ? 0 : err_set(-ENOMEM, "out of memory");
	}
	if (r < 0)
		return err_prefix(r, "security groups");
	a->sg->projects = json_loads(text, 0, NULL);
	free(text);
	if (!json_is_object(a->sg->projects)) {
		json_decref(a->sg->projects);
		a->sg->projects = NULL;
		return err_set(-EINVAL, "security groups: %s: not a JSON object (remove it: the "
				       "scheduler sends the groups again)", path);
	}
	return 0;
}

void agent_sg_free(struct agent *a)
{
	if (!a || !a->sg)
		return;
	json_decref(a->sg->projects);
	free(a->sg->chains);
	free(a->sg->head);
	free(a->sg->members);
	for (size_t i = 0; i < a->sg->n_taps; i++)
		free(a->sg->blocks[i]);
	free(a->sg->blocks);
	free(a->sg->taps);
	free_names(a->sg->sets.v, a->sg->sets.n);
	free(a->sg);
	a->sg = NULL;
}

/* The scheduler's order of a project's views (0: none, an older scheduler
 * or a tool). */
static int64_t seq_of(const json_t *inputs)
{
	const json_t *v = json_object_get(inputs, "seq");

	return json_is_integer(v) ? (int64_t)json_integer_value(v) : 0;
}

/* Is NEW a view the scheduler made before OLD (both numbered)? */
static bool older(const json_t *old, const json_t *new)
{
	return old && seq_of(new) > 0 && seq_of(new) < seq_of(old);
}

int agent_sg_update(struct agent *a, const json_t *inputs, bool apply)
{
	const char *project = json_string_value(json_object_get(inputs, "project"));
	char table[AGENT_FILTER_TABLE_MAX];
	json_t *old, *one;
	bool only = false;
	int64_t t0 = time_mono_ns();
	int r;

	if (!a->sg)
		return 0;
	if (!project || !*project)
		return err_set(-EINVAL, "secgroup.apply: body.project: required");
	pthread_mutex_lock(&a->filter_lock);
	old = json_incref(json_object_get(a->sg->projects, project));
	if (older(old, inputs)) {
		/* a view the scheduler made before the one applied (a build's or a
		 * prepare's read after a later secgroup.apply): it would undo that */
		log_info("security groups of project=%s seq=%" PRId64 " ignored: older than the "
			 "applied seq=%" PRId64, project, seq_of(inputs), seq_of(old));
		pthread_mutex_unlock(&a->filter_lock);
		json_decref(old);
		return 0;
	}
	json_object_set(a->sg->projects, project, (json_t *)(uintptr_t)inputs);
	one = json_object();
	/* the inputs compile, or nothing changes */
	if (one)
		json_object_set(one, project, (json_t *)(uintptr_t)inputs);
	{
		struct strbuf c = { .max = SG_SCRIPT_MAX }, s = { .max = SG_SCRIPT_MAX };
		char (*taps)[AGENT_TAP_LEN] = NULL;
		char **names = NULL;
		size_t nt = 0, nn = 0;

		r = one ? agent_sg_compile("check", one, &c, &s, &taps, &nt, &names, &nn)
			: err_set(-ENOMEM, "out of memory");
		free(taps);
		free_names(names, nn);
		sb_free(&c);
		sb_free(&s);
	}
	json_decref(one);
	if (r == 0 && apply && agent_sg_filtering(a, table))
		r = agent_sg_apply_locked(a, table, &only);
	if (r == 0)
		r = sg_save(a);
	if (r < 0) {
		if (old)
			json_object_set(a->sg->projects, project, old);
		else
			json_object_del(a->sg->projects, project);
	}
	pthread_mutex_unlock(&a->filter_lock);
	json_decref(old);
	if (r < 0)
		return err_prefix(r, "security groups of project %s", project);
	if (apply)
		log_info("security groups applied project=%s ports=%zu members_only=%s ms=%.1f",
			 project, json_array_size(json_object_get(inputs, "ports")),
			 only ? "yes" : "no", (double)(time_mono_ns() - t0) / 1e6);
	return 0;
}

int agent_sg_apply(struct agent *a)
{
	char table[AGENT_FILTER_TABLE_MAX];
	int r;

	if (!agent_sg_filtering(a, table))
		return 0;
	pthread_mutex_lock(&a->filter_lock);
	r = agent_sg_apply_locked(a, table, NULL);
	pthread_mutex_unlock(&a->filter_lock);
	return r < 0 ? err_prefix(r, "security groups") : 0;
}

void agent_sg_forget(struct agent *a, const char *uuid)
{
	char table[AGENT_FILTER_TABLE_MAX];
	const char *pk;
	json_t *p;
	bool changed = false;

	if (!a->sg)
		return;
	pthread_mutex_lock(&a->filter_lock);
	json_object_foreach(a->sg->projects, pk, p) {
		json_t *ports = json_object_get(p, "ports"), *port;
		size_t i;

		json_array_foreach(ports, i, port)
			if (json_is_string(json_object_get(port, "uuid")) &&
			    strcmp(json_string_value(json_object_get(port, "uuid")), uuid) == 0) {
				json_array_remove(ports, i);
				changed = true;
				break;
			}
	}
	if (changed && agent_sg_filtering(a, table) && agent_sg_apply_locked(a, table, NULL) < 0)
		log_warn("security groups of instance=%s not removed: %s (reconcile retries)", uuid,
			 err_msg());
	if (changed && sg_save(a) < 0)
		log_warn("security groups: %s", err_msg());
	pthread_mutex_unlock(&a->filter_lock);
}
