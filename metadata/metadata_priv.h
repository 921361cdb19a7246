/* metadata internals shared by its files and its tests. */
#ifndef STRATUS_METADATA_PRIV_H
#define STRATUS_METADATA_PRIV_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>

#include "metadata/metadata.h"

/* The guest's address without prefix; -ENOENT without a network. */
int md_guest_address(const struct instance_spec *s, char out[INET_ADDRSTRLEN]);

struct md_instance {
	atomic_long refs;
	struct instance_spec spec;
	char addr[INET_ADDRSTRLEN]; /* "" when the spec has no network */
	char *canon;                /* canonical JSON of the spec: "changed?" */
	pthread_mutex_t lock;       /* guards tree and the rate bucket */
	struct md_tree *tree;       /* rendered on first use (the cache) */
	double tokens;              /* rate-limit bucket */
	int64_t refill_ns;          /* last refill, monotonic */
};

/* A new instance (one reference) owning SPEC's contents on success. */
int md_instance_new(struct instance_spec *spec, struct md_instance **out);
static inline struct md_instance *md_instance_ref(struct md_instance *in)
{
	atomic_fetch_add(&in->refs, 1);
	return in;
}
/* The rendered tree (rendered now if not yet), valid while the reference
 * is held; NULL with err_msg() on failure. Caller holds in->lock. */
const struct md_tree *md_instance_tree_locked(struct md_instance *in);

/* IMDSv2 tokens: stateless, HMAC-SHA256(service key, uuid + expiry). */
#define MD_TOKEN_KEY_LEN 32
/* Returns a malloc'd token for UUID valid TTL seconds from NOW_S. */
char *md_token_issue(const unsigned char key[MD_TOKEN_KEY_LEN], const char *uuid, long ttl,
		     int64_t now_s);
/* 0 if TOKEN is a live token of UUID at NOW_S, -EACCES otherwise. */
int md_token_check(const unsigned char key[MD_TOKEN_KEY_LEN], const char *uuid,
		   const char *token, int64_t now_s);
/* hex(HMAC-SHA256(secret, id)): Nova's X-Instance-ID-Signature. Returns a
 * malloc'd string. */
char *md_instance_id_signature(const char *secret, const char *id);

/* "10.0.0.1:80" -> sockaddr (IPv4); -EINVAL with err_msg() otherwise. */
int md_listen_parse(const char *listen, struct sockaddr_in *sa);

/* metrics hooks (metadata/metrics.c): one answered request; a request
 * whose source identify() refused with STATUS (404: no instance's address
 * or id, counted as an unknown source). */
void md_metrics_request(const char *method, const char *url, int status, double seconds);
void md_metrics_identify_failed(int status);

#endif
