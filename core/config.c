/*
 * YAML config into typed structs, through field tables.
 *
 * libyaml's document API gives a node tree where every node keeps its start
 * mark, so each error can name file:line:column. Defaults come from the
 * field tables, then the file overrides them.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <yaml.h>

#include "core/core.h"

#define CFG_MAX_FILE (1u << 20)
#define CFG_MAX_FIELDS 128

const char *const cfg_known_sections[] = {
	"log", "bus", "broker", "agent", "vmm", "images", "scheduler", "metadata", NULL,
};

const struct cfg_field log_config_fields[] = {
	{ .key = "level", .type = CFG_ENUM, .offset = CFG_ENUM_OFFSET(struct log_config, level),
	  .names = log_level_names, .def = "info" },
	{ .key = "syslog", .type = CFG_BOOL, .offset = offsetof(struct log_config, syslog),
	  .def = "false" },
	{ 0 },
};

/* Where each loaded field came from (cfg_where). */
#define CFG_MAX_MARKS 512
static struct {
	const void *field;
	size_t line, col;
} marks[CFG_MAX_MARKS];
static size_t n_marks;
static char marks_file[512];

static void mark_field(const void *field, const yaml_node_t *n)
{
	if (n_marks < CFG_MAX_MARKS) {
		marks[n_marks].field = field;
		marks[n_marks].line = n->start_mark.line + 1;
		marks[n_marks].col = n->start_mark.column + 1;
		n_marks++;
	}
}

const char *cfg_where(const void *field)
{
	static char buf[600];

	for (size_t i = n_marks; i-- > 0;) {
		if (marks[i].field == field) {
			snprintf(buf, sizeof(buf), "%s:%zu:%zu", marks_file, marks[i].line, marks[i].col);
			return buf;
		}
	}
	return marks_file;
}

struct cfg_ctx {
	const char *file;
	yaml_document_t *doc;
};

static int cfg_error(const struct cfg_ctx *c, const yaml_node_t *n, const char *path,
		     const char *fmt, ...) PRINTF_LIKE(4, 5);

static int cfg_error(const struct cfg_ctx *c, const yaml_node_t *n, const char *path,
		     const char *fmt, ...)
{
	char what[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	return err_set(-EINVAL, "%s:%zu:%zu: %s%s%s", c->file,
		       n ? n->start_mark.line + 1 : 1, n ? n->start_mark.column + 1 : 1,
		       path ? path : "", path && *path ? ": " : "", what);
}

static const char *node_kind(const yaml_node_t *n)
{
	switch (n->type) {
	case YAML_SCALAR_NODE: return "a scalar";
	case YAML_SEQUENCE_NODE: return "a list";
	case YAML_MAPPING_NODE: return "a mapping";
	case YAML_NO_NODE: break;
	}
	return "nothing";
}

static bool scalar_is_null(const yaml_node_t *n)
{
	const char *v = (const char *)n->data.scalar.value;

	if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	return !*v || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 || strcmp(v, "Null") == 0 ||
	       strcmp(v, "NULL") == 0;
}

static void describe_enum(const char *const *names, char *buf, size_t len)
{
	size_t off = 0;

	buf[0] = '\0';
	for (size_t i = 0; names[i] && off < len; i++) {
		int n = snprintf(buf + off, len - off, "%s%s", i ? ", " : "", names[i]);

		if (n < 0)
			break;
		off += (size_t)n;
	}
}

static void describe_keys(const struct cfg_field *fields, char *buf, size_t len)
{
	size_t off = 0;

	buf[0] = '\0';
	for (size_t i = 0; fields[i].key && off < len; i++) {
		int n = snprintf(buf + off, len - off, "%s%s", i ? ", " : "", fields[i].key);

		if (n < 0)
			break;
		off += (size_t)n;
	}
}

/* What the field expects, for messages. */
static const char *field_expected(const struct cfg_field *f, char *buf, size_t len)
{
	char list[512];

	switch (f->type) {
	case CFG_STRING:
		return f->expected ? f->expected : "a string";
	case CFG_INT:
		snprintf(buf, len, "an integer from %ld to %ld", f->min, f->max);
		return buf;
	case CFG_BOOL:
		return "true or false";
	case CFG_DOUBLE:
		snprintf(buf, len, "a number from %g to %g", f->dmin, f->dmax);
		return buf;
	case CFG_ENUM:
		describe_enum(f->names, list, sizeof(list));
		snprintf(buf, len, "one of %s", list);
		return buf;
	case CFG_SIZE:
		return "a size like 512M or 2G";
	case CFG_DURATION:
		return "a duration like 500ms, 30s or 5m";
	case CFG_STRLIST:
		return "a list of strings";
	case CFG_MAP:
		return "a mapping of names to values";
	case CFG_SECTION:
		return "a mapping";
	case CFG_CUSTOM:
		return f->expected ? f->expected : "a valid value";
	case CFG_TYPE_LAST:
		break;
	}
	return "a value";
}

static void release_field(const struct cfg_field *f, void *dst)
{
	void *at = (char *)dst + f->offset;

	switch (f->type) {
	case CFG_STRING:
		free(*(char **)at);
		*(char **)at = NULL;
		break;
	case CFG_STRLIST:
		cfg_strlist_free(at);
		break;
	case CFG_MAP:
		cfg_map_free(at);
		break;
	case CFG_SECTION:
		cfg_free(f->sub, at);
		break;
	case CFG_CUSTOM:
		if (f->release)
			f->release(at);
		break;
	case CFG_INT:
	case CFG_BOOL:
	case CFG_DOUBLE:
	case CFG_ENUM:
	case CFG_SIZE:
	case CFG_DURATION:
	case CFG_TYPE_LAST:
		break;
	}
}

/*
 * Convert one scalar text for a scalar field and store it. Returns 0, or
 * <0 when the text is not what the field expects (no message set).
 */
static int store_scalar(const struct cfg_field *f, const char *v, void *dst,
			const char **expected)
{
	void *at = (char *)dst + f->offset;
	long l;
	double d;
	bool b;
	uint64_t sz;
	int64_t ms;
	char *s;

	switch (f->type) {
	case CFG_STRING:
		s = strdup(v);
		if (!s)
			return -ENOMEM;
		free(*(char **)at);
		*(char **)at = s;
		return 0;
	case CFG_INT:
		if (parse_long(v, f->min, f->max, &l) < 0)
			return -EINVAL;
		*(long *)at = l;
		return 0;
	case CFG_BOOL:
		if (parse_bool(v, &b) < 0)
			return -EINVAL;
		*(bool *)at = b;
		return 0;
	case CFG_DOUBLE:
		if (parse_double(v, &d) < 0 || d < f->dmin || d > f->dmax)
			return -EINVAL;
		*(double *)at = d;
		return 0;
	case CFG_ENUM:
		for (int i = 0; f->names[i]; i++) {
			if (strcmp(v, f->names[i]) == 0) {
				*(int *)at = i; /* an int-sized enum */
				return 0;
			}
		}
		return -EINVAL;
	case CFG_SIZE:
		if (parse_size(v, &sz) < 0)
			return -EINVAL;
		*(uint64_t *)at = sz;
		return 0;
	case CFG_DURATION:
		if (parse_duration_ms(v, &ms) < 0)
			return -EINVAL;
		*(int64_t *)at = ms;
		return 0;
	case CFG_CUSTOM:
		if (f->release)
			f->release(at);
		return f->parse(v, at, expected) < 0 ? -EINVAL : 0;
	case CFG_STRLIST:
	case CFG_MAP:
	case CFG_SECTION:
	case CFG_TYPE_LAST:
		break;
	}
	return -EINVAL;
}

static int apply_defaults(const struct cfg_field *fields, void *dst)
{
	for (const struct cfg_field *f = fields; f->key; f++) {
		if (f->type == CFG_SECTION) {
			int r = apply_defaults(f->sub, (char *)dst + f->offset);

			if (r < 0)
				return r;
			continue;
		}
		if (!f->def)
			continue;
		const char *e = NULL;

		if (store_scalar(f, f->def, dst, &e) < 0)
			return err_set(-EINVAL, "internal: default '%s' of key '%s' is invalid",
				       f->def, f->key);
	}
	return 0;
}

static int load_fields(const struct cfg_ctx *c, const yaml_node_t *map, const char *path,
		       const struct cfg_field *fields, void *dst);

static int load_field(const struct cfg_ctx *c, const struct cfg_field *f, yaml_node_t *val,
		      const char *path, void *dst)
{
	void *at = (char *)dst + f->offset;
	char exp[640];

	mark_field(at, val);
	switch (f->type) {
	case CFG_SECTION:
		if (val->type == YAML_SCALAR_NODE && scalar_is_null(val))
			return 0; /* "log:" with nothing under it */
		if (val->type != YAML_MAPPING_NODE)
			return cfg_error(c, val, path, "expected a mapping, got %s", node_kind(val));
		return load_fields(c, val, path, f->sub, at);

	case CFG_STRLIST: {
		struct cfg_strlist l = { 0 };

		if (val->type != YAML_SEQUENCE_NODE)
			return cfg_error(c, val, path, "expected a list of strings, got %s",
					 node_kind(val));
		size_t n = (size_t)(val->data.sequence.items.top - val->data.sequence.items.start);

		l.v = calloc(n + 1, sizeof(char *));
		if (!l.v)
			return err_set(-ENOMEM, "out of memory");
		for (size_t i = 0; i < n; i++) {
			yaml_node_t *it = yaml_document_get_node(c->doc,
								 val->data.sequence.items.start[i]);

			if (!it || it->type != YAML_SCALAR_NODE || scalar_is_null(it)) {
				cfg_strlist_free(&l);
				return cfg_error(c, it ? it : val, path,
						 "expected a list of strings, got %s in the list",
						 it ? (it->type == YAML_SCALAR_NODE ? "an empty item"
										  : node_kind(it))
						    : "nothing");
			}
			l.v[i] = strdup((const char *)it->data.scalar.value);
			if (!l.v[i]) {
				cfg_strlist_free(&l);
				return err_set(-ENOMEM, "out of memory");
			}
			l.n = i + 1;
		}
		cfg_strlist_free(at);
		*(struct cfg_strlist *)at = l;
		return 0;
	}

	case CFG_MAP: {
		struct cfg_map m = { 0 };

		if (val->type != YAML_MAPPING_NODE)
			return cfg_error(c, val, path, "expected a mapping of names to values, got %s",
					 node_kind(val));
		size_t n = (size_t)(val->data.mapping.pairs.top - val->data.mapping.pairs.start);

		m.keys = calloc(n + 1, sizeof(char *));
		m.vals = calloc(n + 1, sizeof(char *));
		if (!m.keys || !m.vals) {
			cfg_map_free(&m);
			return err_set(-ENOMEM, "out of memory");
		}
		for (size_t i = 0; i < n; i++) {
			yaml_node_pair_t *p = &val->data.mapping.pairs.start[i];
			yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
			yaml_node_t *v = yaml_document_get_node(c->doc, p->value);
			char sub[512];

			if (!k || k->type != YAML_SCALAR_NODE) {
				cfg_map_free(&m);
				return cfg_error(c, k ? k : val, path, "keys must be scalars");
			}
			if (snprintf(sub, sizeof(sub), "%s.%s", path,
				     (const char *)k->data.scalar.value) >= (int)sizeof(sub)) {
				cfg_map_free(&m);
				return cfg_error(c, k, path, "key too long");
			}
			if (!v || v->type != YAML_SCALAR_NODE) {
				cfg_map_free(&m);
				return cfg_error(c, v ? v : k, sub, "expected a scalar value, got %s",
						 v ? node_kind(v) : "nothing");
			}
			m.keys[i] = strdup((const char *)k->data.scalar.value);
			m.vals[i] = strdup((const char *)v->data.scalar.value);
			m.n = i + 1;
			if (!m.keys[i] || !m.vals[i]) {
				cfg_map_free(&m);
				return err_set(-ENOMEM, "out of memory");
			}
		}
		cfg_map_free(at);
		*(struct cfg_map *)at = m;
		return 0;
	}

	case CFG_STRING:
	case CFG_INT:
	case CFG_BOOL:
	case CFG_DOUBLE:
	case CFG_ENUM:
	case CFG_SIZE:
	case CFG_DURATION:
	case CFG_CUSTOM:
		if (val->type != YAML_SCALAR_NODE)
			return cfg_error(c, val, path, "expected %s, got %s",
					 field_expected(f, exp, sizeof(exp)), node_kind(val));
		if (scalar_is_null(val))
			return cfg_error(c, val, path, "expected %s, got nothing",
					 field_expected(f, exp, sizeof(exp)));
		{
			const char *v = (const char *)val->data.scalar.value;
			const char *e = NULL;
			int r = store_scalar(f, v, dst, &e);

			if (r == -ENOMEM)
				return err_set(r, "out of memory");
			if (r < 0)
				return cfg_error(c, val, path, "expected %s, got '%.200s'",
						 e ? e : field_expected(f, exp, sizeof(exp)), v);
		}
		return 0;

	case CFG_TYPE_LAST:
		break;
	}
	return cfg_error(c, val, path, "internal: bad field type");
}

static int load_fields(const struct cfg_ctx *c, const yaml_node_t *map, const char *path,
		       const struct cfg_field *fields, void *dst)
{
	bool seen[CFG_MAX_FIELDS] = { false };
	size_t nf = 0;

	while (fields[nf].key)
		nf++;
	if (nf > CFG_MAX_FIELDS)
		return err_set(-EINVAL, "internal: section %s has too many fields", path);
	for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
	     p++) {
		yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
		yaml_node_t *v = yaml_document_get_node(c->doc, p->value);
		char sub[512], keys[1024];
		const char *key;
		size_t i;

		if (!k || k->type != YAML_SCALAR_NODE)
			return cfg_error(c, k, path, "keys must be scalars, got %s",
					 k ? node_kind(k) : "nothing");
		key = (const char *)k->data.scalar.value;
		if (snprintf(sub, sizeof(sub), "%s%s%s", path, *path ? "." : "", key) >=
		    (int)sizeof(sub))
			return cfg_error(c, k, path, "key too long");
		for (i = 0; i < nf; i++)
			if (strcmp(fields[i].key, key) == 0)
				break;
		if (i == nf) {
			describe_keys(fields, keys, sizeof(keys));
			return cfg_error(c, k, sub, "unknown key (expected one of: %s)", keys);
		}
		if (seen[i])
			return cfg_error(c, k, sub, "duplicate key");
		seen[i] = true;
		int r = load_field(c, &fields[i], v, sub, dst);

		if (r < 0)
			return r;
	}
	for (size_t i = 0; i < nf; i++) {
		if (fields[i].required && !seen[i])
			return cfg_error(c, map, path, "missing required key '%s'", fields[i].key);
	}
	return 0;
}

static bool known_section(const char *name)
{
	for (size_t i = 0; cfg_known_sections[i]; i++)
		if (strcmp(cfg_known_sections[i], name) == 0)
			return true;
	return false;
}

static int load_document(const struct cfg_ctx *c, const struct cfg_section *sections)
{
	yaml_node_t *root = yaml_document_get_root_node(c->doc);
	bool seen[CFG_MAX_FIELDS] = { false };
	size_t ns = 0;

	while (sections[ns].name)
		ns++;
	if (ns > CFG_MAX_FIELDS)
		return err_set(-EINVAL, "internal: too many sections");
	if (root && !(root->type == YAML_SCALAR_NODE && scalar_is_null(root))) {
		if (root->type != YAML_MAPPING_NODE)
			return cfg_error(c, root, NULL,
					 "expected a mapping of sections (log, bus, agent, ...), got %s",
					 node_kind(root));
		for (yaml_node_pair_t *p = root->data.mapping.pairs.start;
		     p < root->data.mapping.pairs.top; p++) {
			yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
			yaml_node_t *v = yaml_document_get_node(c->doc, p->value);
			const char *key;
			size_t i;
			char list[256];

			if (!k || k->type != YAML_SCALAR_NODE)
				return cfg_error(c, k, NULL, "section names must be scalars");
			key = (const char *)k->data.scalar.value;
			for (i = 0; i < ns; i++)
				if (strcmp(sections[i].name, key) == 0)
					break;
			if (i == ns) {
				if (known_section(key))
					continue; /* another daemon's section */
				describe_enum(cfg_known_sections, list, sizeof(list));
				return cfg_error(c, k, key, "unknown section (expected one of: %s)", list);
			}
			if (seen[i])
				return cfg_error(c, k, key, "duplicate section");
			seen[i] = true;
			if (v->type == YAML_SCALAR_NODE && scalar_is_null(v))
				continue;
			if (v->type != YAML_MAPPING_NODE)
				return cfg_error(c, v, key, "expected a mapping, got %s", node_kind(v));
			int r = load_fields(c, v, key, sections[i].fields, sections[i].dst);

			if (r < 0)
				return r;
		}
	}
	for (size_t i = 0; i < ns; i++) {
		if (sections[i].required && !seen[i])
			return cfg_error(c, root, NULL, "missing required section '%s'",
					 sections[i].name);
	}
	return 0;
}

int cfg_load_string(const char *name, const char *yaml, size_t len,
		    const struct cfg_section *sections)
{
	yaml_parser_t parser;
	yaml_document_t doc;
	struct cfg_ctx c = { .file = name, .doc = &doc };
	int r;

	n_marks = 0;
	snprintf(marks_file, sizeof(marks_file), "%s", name);
	for (const struct cfg_section *s = sections; s->name; s++) {
		r = apply_defaults(s->fields, s->dst);
		if (r < 0)
			return r;
	}
	if (!yaml_parser_initialize(&parser))
		return err_set(-ENOMEM, "%s: cannot initialise the YAML parser", name);
	yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
	if (!yaml_parser_load(&parser, &doc)) {
		r = err_set(-EINVAL, "%s:%zu:%zu: syntax error: %s%s%s", name,
			    parser.problem_mark.line + 1, parser.problem_mark.column + 1,
			    parser.problem ? parser.problem : "invalid YAML",
			    parser.context ? " " : "", parser.context ? parser.context : "");
		yaml_parser_delete(&parser);
		return r;
	}
	r = load_document(&c, sections);
	yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	return r;
}

int cfg_load_file(const char *path, const struct cfg_section *sections)
{
	char *buf = NULL;
	size_t len = 0;
	int r;

	r = read_file(path, CFG_MAX_FILE, &buf, &len);
	if (r < 0)
		return err_prefix(r, "config");
	r = cfg_load_string(path, buf, len, sections);
	free(buf);
	return r;
}

void cfg_free(const struct cfg_field *fields, void *dst)
{
	if (!dst)
		return;
	for (const struct cfg_field *f = fields; f->key; f++)
		release_field(f, dst);
}

void cfg_strlist_free(struct cfg_strlist *l)
{
	if (!l)
		return;
	for (size_t i = 0; l->v && l->v[i]; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

void cfg_map_free(struct cfg_map *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->n; i++) {
		free(m->keys[i]);
		free(m->vals[i]);
	}
	free(m->keys);
	free(m->vals);
	m->keys = m->vals = NULL;
	m->n = 0;
}

const char *cfg_map_get(const struct cfg_map *m, const char *key)
{
	for (size_t i = 0; i < m->n; i++)
		if (strcmp(m->keys[i], key) == 0)
			return m->vals[i];
	return NULL;
}
