/*
 * Security groups, reconcile: the kernel's table checked against what the
 * agent last applied (secgroup.c) - the base chains, every port's and every
 * shared chain's rule count, every remote group set's members - and put back
 * when it differs; chains and sets of ports and groups the agent does not
 * have (left by a crash, by hand) removed. docs/agent.md "Security groups".
 */
#define LOG_TAG "agent"
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "agent/secgroup_priv.h"

/* How many "add rule" lines for CHAIN the compiled text holds. */
static size_t rules_in(const char *text, const char *table, const char *chain)
{
	char pat[160];
	size_t n = 0;

	snprintf(pat, sizeof(pat), "add rule bridge %s %s ", table, chain);
	for (const char *c = text; c && (c = strstr(c, pat)); c += strlen(pat))
		n++;
	return n;
}

/* Rules of CHAIN in the kernel's table (-1: no such chain). */
static long kernel_rules(const json_t *doc, const char *chain)
{
	bool exists = false;
	long n = 0;
	size_t i;
	json_t *it;

	json_array_foreach(json_object_get(doc, "nftables"), i, it) {
		const char *c = json_string_value(json_object_get(json_object_get(it, "chain"), "name"));
		const char *rc = json_string_value(json_object_get(json_object_get(it, "rule"), "chain"));

		if (c && strcmp(c, chain) == 0)
			exists = true;
		if (rc && strcmp(rc, chain) == 0)
			n++;
	}
	return exists ? n : -1;
}

/* Chains sg-<tap>-in/-out in the kernel for ports we do not filter. */
static int stale_kernel_chains(const json_t *doc, const struct agent_sg *sg, const char *table,
			       struct strbuf *sb)
{
	size_t i;
	json_t *it;
	int r = 0;

	json_array_foreach(json_object_get(doc, "nftables"), i, it) {
		const char *c = json_string_value(json_object_get(json_object_get(it, "chain"), "name"));
		char tap[AGENT_TAP_LEN];
		size_t l = c ? strlen(c) : 0;
		bool in, keep = false;

		if (!c || strncmp(c, "sg-" AGENT_TAP_PREFIX, 6) != 0 || l < 8)
			continue;
		in = strcmp(c + l - 3, "-in") == 0;
		if (!in && (l < 9 || strcmp(c + l - 4, "-out") != 0))
			continue;
		if (l - 3 - (in ? 3 : 4) >= AGENT_TAP_LEN)
			continue;
		snprintf(tap, sizeof(tap), "%.*s", (int)(l - 3 - (in ? 3 : 4)), c + 3);
		for (size_t k = 0; k < sg->n_taps && !keep; k++)
			keep = strcmp(sg->taps[k], tap) == 0;
		if (!keep)
			r = sb_printf(sb, "add element bridge %1$s sg_%2$s { \"%3$s\" : jump %4$s }\n"
					  "delete element bridge %1$s sg_%2$s { \"%3$s\" }\n"
					  "delete chain bridge %1$s %4$s\n",
				      table, in ? "in" : "out", tap, c);
		if (r < 0)
			break;
	}
	return r;
}

static bool applied_name(const struct agent_sg *sg, const char *name)
{
	for (size_t k = 0; k < sg->sets.n; k++)
		if (strcmp(sg->sets.v[k], name) == 0)
			return true;
	return false;
}

/* Shared chains sgc-<h>-in/-out and remote-group sets rg4-/rg6- in the
 * kernel that the last applied script does not have: a combination of groups
 * no port uses any more, a group gone, left by an agent that died between
 * its transactions. In SB, after the stale port chains (which jump to them);
 * *n counts the objects. */
static int stale_kernel_shared(const json_t *doc, const struct agent_sg *sg, const char *table,
			       struct strbuf *sb, size_t *n)
{
	struct strbuf sets = { .max = SG_SCRIPT_MAX }; /* deleted after the chains using them */
	size_t i;
	json_t *it;
	int r = 0;

	json_array_foreach(json_object_get(doc, "nftables"), i, it) {
		const char *c = json_string_value(json_object_get(json_object_get(it, "chain"), "name"));
		const char *set = json_string_value(json_object_get(json_object_get(it, "set"), "name"));
		char in[64];
		size_t l = c ? strlen(c) : 0;

		if (c && strncmp(c, "sgc-", 4) == 0 && l > 4 && l < sizeof(in)) {
			/* the state lists a pair by its -in chain */
			if (l > 4 + 4 && strcmp(c + l - 4, "-out") == 0)
				snprintf(in, sizeof(in), "%.*s-in", (int)(l - 4), c);
			else
				snprintf(in, sizeof(in), "%s", c);
			if (applied_name(sg, in))
				continue;
			r = sb_printf(sb, "flush chain bridge %1$s %2$s\ndelete chain bridge %1$s %2$s\n",
				      table, c);
			(*n)++;
		} else if (set && (strncmp(set, "rg4-", 4) == 0 || strncmp(set, "rg6-", 4) == 0) &&
			   !applied_name(sg, set)) {
			r = sb_printf(&sets, "delete set bridge %s %s\n", table, set);
			(*n)++;
		}
		if (r < 0)
			break;
	}
	if (r == 0 && sets.len)
		r = sb_append(sb, sets.buf, sets.len);
	sb_free(&sets);
	return r;
}

/* Do the members of set NAME in the kernel equal those of the last applied
 * script (MEMBERS: its "add element bridge TABLE NAME { a, b }" line, none
 * for an empty set)? *want and *have: how many each side holds. */
static bool set_members_ok(const json_t *doc, const char *members, const char *table,
			   const char *name, size_t *want, size_t *have)
{
	const json_t *elem = NULL;
	bool found = false, ok = true;
	char pat[160];
	const char *line, *end;
	size_t i;
	json_t *it;

	json_array_foreach(json_object_get(doc, "nftables"), i, it) {
		const json_t *st = json_object_get(it, "set");
		const char *nm = json_string_value(json_object_get(st, "name"));

		if (nm && strcmp(nm, name) == 0) {
			found = true;
			elem = json_object_get(st, "elem");
			break;
		}
	}
	*want = 0;
	*have = json_array_size(elem);
	if (!found)
		return false;
	snprintf(pat, sizeof(pat), "add element bridge %s %s { ", table, name);
	line = members ? strstr(members, pat) : NULL;
	end = line ? strstr(line, " }\n") : NULL;
	for (const char *p = line ? line + strlen(pat) : NULL; p && end && p < end;) {
		const char *q = strstr(p, ", ");
		size_t len;
		bool in = false;

		if (!q || q > end)
			q = end;
		len = (size_t)(q - p);
		(*want)++;
		json_array_foreach(elem, i, it) {
			const char *e = json_string_value(it);

			if (e && strlen(e) == len && strncmp(e, p, len) == 0)
				in = true;
		}
		ok = ok && in;
		p = q == end ? NULL : q + 2;
	}
	return ok && *want == *have;
}

int agent_sg_reconcile(struct agent *a)
{
	char table[AGENT_FILTER_TABLE_MAX], chain[AGENT_TAP_LEN + 8];
	struct agent_filter_state st = { 0 };
	struct strbuf stale = { .max = SG_SCRIPT_MAX };
	bool ok, members = false;
	int r;

	if (!agent_sg_filtering(a, table))
		return 0;
	pthread_mutex_lock(&a->filter_lock);
	/* first after a start: what the saved state says */
	if (!a->sg->applied && (r = agent_sg_apply_locked(a, table, NULL)) < 0)
		goto out;
	r = agent_filter_state_read(a->cfg->network.nft, table, &st);
	if (r < 0)
		goto out;
	ok = st.present && kernel_rules(st.doc, "sg-forward") == 2 &&
	     kernel_rules(st.doc, "sg-input") == 4 && kernel_rules(st.doc, "sg-output") == 1;
	for (size_t i = 0; ok && i < a->sg->n_taps; i++)
		for (int d = 0; ok && d < 2; d++) {
			snprintf(chain, sizeof(chain), "sg-%s-%s", a->sg->taps[i], d ? "out" : "in");
			ok = kernel_rules(st.doc, chain) == (long)rules_in(a->sg->chains, table, chain);
		}
	for (size_t i = 0; ok && i < a->sg->sets.n; i++) {
		const char *nm = a->sg->sets.v[i];
		size_t l = strlen(nm);
		char o[48];

		if (strncmp(nm, "sgc-", 4) != 0)
			continue;
		snprintf(o, sizeof(o), "%.*s-out", (int)(l - 3), nm);
		ok = kernel_rules(st.doc, nm) == (long)rules_in(a->sg->chains, table, nm) &&
		     kernel_rules(st.doc, o) == (long)rules_in(a->sg->chains, table, o);
	}
	if (!ok) {
		log_warn("security groups: the chains in table bridge %s were missing or changed, "
			 "restoring them ports=%zu", table, a->sg->n_taps);
		a->sg->applied = false;
	} else if (agent_sg_ports_changed_locked(a)) {
		/* a port came or went without an apply (a secgroup.apply read
		 * while its migration's prepare was undone): not a restore */
		log_info("security groups: the ports here changed since the last apply, "
			 "applying table=%s", table);
		r = agent_sg_apply_locked(a, table, NULL);
		goto out; /* the table read is older than that: the next round checks it */
	}
	/* the members: every element, not only the sets' presence */
	for (size_t i = 0; ok && i < a->sg->sets.n; i++) {
		const char *nm = a->sg->sets.v[i];
		size_t want, have;

		if (strncmp(nm, "rg", 2) != 0 ||
		    set_members_ok(st.doc, a->sg->members, table, nm, &want, &have))
			continue;
		log_warn("security groups: set %s in table bridge %s has other members than "
			 "applied (applied %zu, found %zu), restoring them", nm, table, want, have);
		members = true;
	}
	if (!ok || members) {
		r = agent_sg_apply_locked(a, table, NULL); /* chains and members, or members only */
		if (r == 0) {
			pthread_mutex_lock(&a->m_lock);
			a->m.sg_restored++;
			pthread_mutex_unlock(&a->m_lock);
		}
	}
	if (r == 0 && st.present && (r = stale_kernel_chains(st.doc, a->sg, table, &stale)) == 0 &&
	    stale.len) {
		log_info("security groups: removing the chains of ports of no instance");
		r = agent_filter_run(a->cfg->network.nft, stale.buf);
	}
	if (r == 0 && st.present) {
		size_t n = 0;

		sb_free(&stale);
		if ((r = stale_kernel_shared(st.doc, a->sg, table, &stale, &n)) == 0 && n) {
			log_info("security groups: removing %zu chains and sets of groups no port "
				 "uses table=%s", n, table);
			r = agent_filter_run(a->cfg->network.nft, stale.buf);
		}
	}
out:
	pthread_mutex_unlock(&a->filter_lock);
	agent_filter_state_free(&st);
	sb_free(&stale);
	return r < 0 ? err_prefix(r, "security groups reconcile") : 0;
}
