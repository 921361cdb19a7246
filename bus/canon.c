/*
 * The canonical bytes of an envelope: what a signature covers (docs/bus.md,
 * "Canonical form"). Any client can produce them: they are exactly what
 * Python's json.dumps(obj, sort_keys=True, separators=(",", ":"),
 * ensure_ascii=False).encode() gives for the envelope's fields without
 * "auth":
 *   - objects with their keys sorted by code point (byte order of UTF-8),
 *     no space anywhere;
 *   - strings in UTF-8 as they are, with only '"', '\\' and the control
 *     characters escaped: \b \f \n \r \t, the others as \u00xx (lower case);
 *   - integers in decimal; true, false, null. Real numbers have no single
 *     text form across languages and are refused in a signed envelope.
 */
#define LOG_TAG "bus"
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "bus/bus.h"
#include "bus/bus_priv.h"

#define CANON_MAX_DEPTH 32

static int canon_value(struct strbuf *sb, json_t *v, int depth);

static int canon_string(struct strbuf *sb, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t run = 0;
	int r;

	if ((r = sb_append(sb, "\"", 1)) < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[7];
		size_t en = 2;

		if (c >= 0x20 && c != '"' && c != '\\') {
			run++;
			continue;
		}
		if (run && (r = sb_append(sb, s + i - run, run)) < 0)
			return r;
		run = 0;
		esc[0] = '\\';
		switch (c) {
		case '"': esc[1] = '"'; break;
		case '\\': esc[1] = '\\'; break;
		case '\b': esc[1] = 'b'; break;
		case '\f': esc[1] = 'f'; break;
		case '\n': esc[1] = 'n'; break;
		case '\r': esc[1] = 'r'; break;
		case '\t': esc[1] = 't'; break;
		default:
			esc[1] = 'u';
			esc[2] = '0';
			esc[3] = '0';
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 15];
			en = 6;
			break;
		}
		if ((r = sb_append(sb, esc, en)) < 0)
			return r;
	}
	if (run && (r = sb_append(sb, s + n - run, run)) < 0)
		return r;
	return sb_append(sb, "\"", 1);
}

/* An integer in decimal (what %lld prints, without printf's cost: a signed
 * build has a few dozen). */
static int canon_integer(struct strbuf *sb, json_int_t v)
{
	char buf[24], *p = buf + sizeof(buf);
	unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;

	do {
		*--p = (char)('0' + u % 10);
		u /= 10;
	} while (u);
	if (v < 0)
		*--p = '-';
	return sb_append(sb, p, (size_t)(buf + sizeof(buf) - p));
}

/* A member of an object: its key and value, sorted together so that the
 * value needs no second lookup. */
struct member {
	const char *key;
	size_t len;
	json_t *v;
};

#define CANON_STACK_MEMBERS 16 /* an envelope's and a build's objects fit: no malloc */

static int cmp_members(const void *a, const void *b)
{
	return strcmp(((const struct member *)a)->key, ((const struct member *)b)->key);
}

static int canon_object(struct strbuf *sb, json_t *o, int depth)
{
	struct member small[CANON_STACK_MEMBERS], *m = small;
	size_t n = json_object_size(o), i = 0;
	const char *k;
	json_t *v;
	int r = 0;

	if (n > CANON_STACK_MEMBERS && !(m = malloc(n * sizeof(*m))))
		return -ENOMEM;
	json_object_foreach(o, k, v) {
		m[i].key = k;
		m[i].len = strlen(k);
		m[i++].v = v;
	}
	qsort(m, n, sizeof(*m), cmp_members);
	if ((r = sb_append(sb, "{", 1)) < 0)
		goto out;
	for (i = 0; i < n; i++) {
		if ((i && (r = sb_append(sb, ",", 1)) < 0) ||
		    (r = canon_string(sb, m[i].key, m[i].len)) < 0 ||
		    (r = sb_append(sb, ":", 1)) < 0 ||
		    (r = canon_value(sb, m[i].v, depth + 1)) < 0)
			goto out;
	}
	r = sb_append(sb, "}", 1);
out:
	if (m != small)
		free(m);
	return r;
}

static int canon_value(struct strbuf *sb, json_t *v, int depth)
{
	size_t i;
	int r;

	if (depth > CANON_MAX_DEPTH)
		return -ELOOP;
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		return canon_object(sb, v, depth);
	case JSON_ARRAY:
		if ((r = sb_append(sb, "[", 1)) < 0)
			return r;
		for (i = 0; i < json_array_size(v); i++)
			if ((i && (r = sb_append(sb, ",", 1)) < 0) ||
			    (r = canon_value(sb, json_array_get(v, i), depth + 1)) < 0)
				return r;
		return sb_append(sb, "]", 1);
	case JSON_STRING:
		return canon_string(sb, json_string_value(v), json_string_length(v));
	case JSON_INTEGER:
		return canon_integer(sb, json_integer_value(v));
	case JSON_REAL:
		return -EDOM;
	case JSON_TRUE:
		return sb_append(sb, "true", 4);
	case JSON_FALSE:
		return sb_append(sb, "false", 5);
	case JSON_NULL:
		return sb_append(sb, "null", 4);
	}
	return -EINVAL;
}

/* R (a canon_* failure) as the error a caller reports. */
static int canon_error(int r, size_t max)
{
	switch (r) {
	case -EDOM:
		return err_set(-EINVAL, "canonical form: real numbers cannot be signed "
				       "(send integers)");
	case -ELOOP:
		return err_set(-EINVAL, "canonical form: nested deeper than %d levels",
			       CANON_MAX_DEPTH);
	case -E2BIG:
		return err_set(-E2BIG, "canonical form: more than %zu bytes", max);
	default:
		return err_set(r, "canonical form: out of memory");
	}
}

int bus_canonical_json(json_t *v, size_t max, char **out, size_t *len)
{
	struct strbuf sb = { .max = max };
	int r = canon_value(&sb, v, 0);

	if (r < 0) {
		sb_free(&sb);
		return canon_error(r, max);
	}
	*len = sb.len;
	*out = sb_steal(&sb);
	return *out ? 0 : err_set(-ENOMEM, "canonical form: out of memory");
}

/* S is UTF-8 as jansson takes it: no overlong form, no surrogate, nothing
 * above U+10FFFF. */
static bool utf8_valid(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	while (*p) {
		unsigned c = *p, n, cp;

		if (c < 0x80) {
			p++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			n = 1, cp = c & 0x1f;
		else if (c >= 0xe0 && c <= 0xef)
			n = 2, cp = c & 0x0f;
		else if (c >= 0xf0 && c <= 0xf4)
			n = 3, cp = c & 0x07;
		else
			return false;
		for (unsigned i = 1; i <= n; i++) {
			if ((p[i] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (p[i] & 0x3f);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		p += n + 1;
	}
	return true;
}

/* One "KEY":"VALUE", member of the envelope's object (KEY needs no escape). */
static int canon_member(struct strbuf *sb, const char *key, const char *value)
{
	int r = sb_append(sb, key, strlen(key));

	return r < 0 ? r : canon_string(sb, value, strlen(value));
}

/*
 * The envelope's object written directly, its members in their sorted
 * order (body, id, request_id, source, ts, type, v): the same bytes as
 * bus_canonical_json of the object (tests/bus/test_envelope.c compares
 * them), without building that object for every envelope signed,
 * verified or hashed into a batch. Its strings are what jansson would
 * have taken: id, request_id and ts are checked UUIDs and times, type a
 * schema row's name, source checked here.
 */
int bus_envelope_canonical(const struct bus_envelope *e, char **out, size_t *len)
{
	struct strbuf sb = { .max = BUS_MAX_MESSAGE };
	int r;

	if (!e->body || !e->source)
		return err_set(-ENOMEM, "envelope %s: cannot build the JSON", e->id);
	if (!utf8_valid(e->source))
		return err_set(-EINVAL, "envelope %s: source: not UTF-8", e->id);
	if ((r = sb_append(&sb, "{\"body\":", 8)) < 0 || (r = canon_value(&sb, e->body, 1)) < 0 ||
	    (r = canon_member(&sb, ",\"id\":", e->id)) < 0 ||
	    (r = canon_member(&sb, ",\"request_id\":", e->request_id)) < 0 ||
	    (r = canon_member(&sb, ",\"source\":", e->source)) < 0 ||
	    (r = canon_member(&sb, ",\"ts\":", e->ts)) < 0 ||
	    (r = canon_member(&sb, ",\"type\":", e->type)) < 0 ||
	    (r = sb_append(&sb, ",\"v\":", 5)) < 0 || (r = canon_integer(&sb, e->v)) < 0 ||
	    (r = sb_append(&sb, "}", 1)) < 0) {
		sb_free(&sb);
		return err_prefix(canon_error(r, BUS_MAX_MESSAGE), "envelope %s (%s)", e->id,
				  e->type);
	}
	*len = sb.len;
	*out = sb_steal(&sb);
	return *out ? 0 : err_set(-ENOMEM, "envelope %s: out of memory", e->id);
}
