/*
 * Internals of the security groups shared by secgroup.c (the compiler and
 * the agent's state) and secgroup_reconcile.c (the kernel checked against
 * what was applied). Not for other files.
 */
#ifndef STRATUS_AGENT_SECGROUP_PRIV_H
#define STRATUS_AGENT_SECGROUP_PRIV_H

#include "agent/agent_priv.h"

#define SG_SCRIPT_MAX (32u << 20)

struct agent_sg {
	json_t *projects;   /* project -> the last secgroup.apply body for it */
	char *chains;       /* the chain part of the last applied script (all of it) */
	char *head;         /* its shared part: base and group chains */
	char *members;      /* its sets part: flush set + add element, per set */
	char (*taps)[AGENT_TAP_LEN]; /* ports with sg chains, as last applied */
	char **blocks;      /* per tap: the chains and elements last applied */
	size_t n_taps;
	struct { char **v; size_t n; } sets; /* set names applied */
	bool applied;       /* once since the start: the kernel matches ->chains */
};

/* Is this agent filtering security groups (nftables, a bridge)? TABLE gets
 * its table's name. */
bool agent_sg_filtering(const struct agent *a, char table[AGENT_FILTER_TABLE_MAX]);
/* Compile a->sg->projects and run what differs from the last applied (all
 * of it when !a->sg->applied). Caller holds filter_lock. *members_only (may
 * be NULL): whether it changed only set members. */
int agent_sg_apply_locked(struct agent *a, const char *table, bool *members_only);
/* Do the ports here (agent_row_has_port) of the saved inputs differ from
 * those last applied (a row made or removed since)? Caller holds filter_lock. */
bool agent_sg_ports_changed_locked(struct agent *a);

#endif
