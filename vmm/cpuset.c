/* CPU sets: the Linux CPU list syntax ("0-3,8,^2") and bit operations. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "vmm/vmm.h"

void vmm_cpuset_set(struct vmm_cpuset *s, int cpu)
{
	if (cpu >= 0 && cpu < VMM_MAX_CPUS)
		s->bits[cpu / 64] |= UINT64_C(1) << (cpu % 64);
}

void vmm_cpuset_clear(struct vmm_cpuset *s, int cpu)
{
	if (cpu >= 0 && cpu < VMM_MAX_CPUS)
		s->bits[cpu / 64] &= ~(UINT64_C(1) << (cpu % 64));
}

bool vmm_cpuset_has(const struct vmm_cpuset *s, int cpu)
{
	if (cpu < 0 || cpu >= VMM_MAX_CPUS)
		return false;
	return (s->bits[cpu / 64] >> (cpu % 64)) & 1;
}

int vmm_cpuset_count(const struct vmm_cpuset *s)
{
	int n = 0;

	for (size_t i = 0; i < ARRAY_SIZE(s->bits); i++)
		n += __builtin_popcountll(s->bits[i]);
	return n;
}

bool vmm_cpuset_empty(const struct vmm_cpuset *s)
{
	return vmm_cpuset_count(s) == 0;
}

void vmm_cpuset_and(struct vmm_cpuset *dst, const struct vmm_cpuset *other)
{
	for (size_t i = 0; i < ARRAY_SIZE(dst->bits); i++)
		dst->bits[i] &= other->bits[i];
}

void vmm_cpuset_or(struct vmm_cpuset *dst, const struct vmm_cpuset *other)
{
	for (size_t i = 0; i < ARRAY_SIZE(dst->bits); i++)
		dst->bits[i] |= other->bits[i];
}

void vmm_cpuset_andnot(struct vmm_cpuset *dst, const struct vmm_cpuset *other)
{
	for (size_t i = 0; i < ARRAY_SIZE(dst->bits); i++)
		dst->bits[i] &= ~other->bits[i];
}

/* One number of a list; advances *p. */
static int cpu_number(const char **p, int *out)
{
	long v = 0;
	const char *s = *p;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	while (*s >= '0' && *s <= '9') {
		v = v * 10 + (*s - '0');
		if (v >= VMM_MAX_CPUS)
			return -ERANGE;
		s++;
	}
	*p = s;
	*out = (int)v;
	return 0;
}

int vmm_cpuset_parse(const char *s, struct vmm_cpuset *out)
{
	struct vmm_cpuset inc = { { 0 } }, exc = { { 0 } };
	const char *p = s;

	while (*p == ' ' || *p == '\t')
		p++;
	if (*p == '\0' || strcmp(p, "\n") == 0) {
		*out = inc;
		return 0;
	}
	for (;;) {
		bool neg = false;
		int a, b, r;

		while (*p == ' ')
			p++;
		if (*p == '^') {
			neg = true;
			p++;
		}
		r = cpu_number(&p, &a);
		if (r < 0)
			goto bad;
		b = a;
		if (*p == '-') {
			p++;
			r = cpu_number(&p, &b);
			if (r < 0 || b < a)
				goto bad;
		}
		for (int c = a; c <= b; c++)
			vmm_cpuset_set(neg ? &exc : &inc, c);
		while (*p == ' ')
			p++;
		if (*p == ',') {
			p++;
			continue;
		}
		if (*p == '\0' || (*p == '\n' && p[1] == '\0'))
			break;
		goto bad;
	}
	vmm_cpuset_andnot(&inc, &exc);
	*out = inc;
	return 0;
bad:
	return err_set(-EINVAL, "'%s': expected a CPU list like 0-3,8,^2 (CPUs below %d)", s,
		       VMM_MAX_CPUS);
}

char *vmm_cpuset_format(const struct vmm_cpuset *s)
{
	struct strbuf sb = { 0 };
	bool first = true;

	for (int c = 0; c < VMM_MAX_CPUS; c++) {
		int e;

		if (!vmm_cpuset_has(s, c))
			continue;
		for (e = c; e + 1 < VMM_MAX_CPUS && vmm_cpuset_has(s, e + 1); e++)
			;
		int r = (e == c) ? sb_printf(&sb, "%s%d", first ? "" : ",", c)
				 : sb_printf(&sb, "%s%d-%d", first ? "" : ",", c, e);
		if (r < 0) {
			sb_free(&sb);
			return NULL;
		}
		first = false;
		c = e;
	}
	if (!sb.buf)
		return strdup("");
	return sb_steal(&sb);
}
