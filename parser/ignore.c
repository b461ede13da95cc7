/* kiln — .dockerignore patterns.  See ignore.h for the rules. */
#include "parser/ignore.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"

/* ------------------------------------------------------------- clean */

char *kiln_ignore_clean_path(const char *path)
{
	size_t n = strlen(path);
	if (n == 0)
		return kiln_xstrdup(".");
	bool rooted = path[0] == '/';
	char *out = kiln_xmalloc(n + 2);
	size_t w = 0, r = 0, dotdot = 0;
	if (rooted) {
		out[w++] = '/';
		r = 1;
		dotdot = 1;
	}
	while (r < n) {
		if (path[r] == '/') {
			r++;
		} else if (path[r] == '.' && (r + 1 == n || path[r + 1] == '/')) {
			r++;
		} else if (path[r] == '.' && path[r + 1] == '.' && (r + 2 == n || path[r + 2] == '/')) {
			r += 2;
			if (w > dotdot) {
				w--;
				while (w > dotdot && out[w] != '/')
					w--;
			} else if (!rooted) {
				if (w > 0)
					out[w++] = '/';
				out[w++] = '.';
				out[w++] = '.';
				dotdot = w;
			}
		} else {
			if ((rooted && w != 1) || (!rooted && w != 0))
				out[w++] = '/';
			while (r < n && path[r] != '/')
				out[w++] = path[r++];
		}
	}
	if (w == 0)
		out[w++] = '.';
	out[w] = 0;
	return out;
}

/* ------------------------------------------------------------ runes */

static int32_t dec(const char *s, size_t len, size_t *w)
{
	const unsigned char *u = (const unsigned char *)s;
	unsigned char c = u[0];
	if (c < 0x80) {
		*w = 1;
		return c;
	}
	size_t need;
	int32_t r;
	if ((c & 0xe0) == 0xc0) {
		need = 2;
		r = c & 0x1f;
	} else if ((c & 0xf0) == 0xe0) {
		need = 3;
		r = c & 0x0f;
	} else if ((c & 0xf8) == 0xf0) {
		need = 4;
		r = c & 0x07;
	} else {
		*w = 1;
		return 0xfffd;
	}
	if (need > len) {
		*w = 1;
		return 0xfffd;
	}
	for (size_t i = 1; i < need; i++) {
		if ((u[i] & 0xc0) != 0x80) {
			*w = 1;
			return 0xfffd;
		}
		r = (r << 6) | (u[i] & 0x3f);
	}
	if ((need == 2 && r < 0x80) || (need == 3 && r < 0x800) || (need == 4 && (r < 0x10000 || r > 0x10ffff)) ||
	    (r >= 0xd800 && r <= 0xdfff)) {
		*w = 1;
		return 0xfffd;
	}
	*w = need;
	return r;
}

/* ---------------------------------------------------------- patterns */

enum tok_kind {
	T_LIT,      /* one byte */
	T_STAR,     /* [^/]* */
	T_QMARK,    /* [^/] */
	T_DSTAR,    /* "(.*SLASH)?": "**" followed by more */
	T_DSTAR_END,/* .*       "**" at the end */
	T_CLASS,    /* [...] */
};

struct range {
	int32_t lo, hi;
};

struct tok {
	enum tok_kind kind;
	unsigned char c;
	bool negated;
	struct range *ranges;
	size_t nranges;
	size_t star;       /* wildcards: ordinal (the memo row) */
};

enum match_type { M_EXACT, M_PREFIX, M_SUFFIX, M_REGEXP };

struct ipat {
	char *text;       /* cleaned, without '!' */
	bool exclusion;   /* "!" pattern: re-includes */
	enum match_type type;
	struct tok *toks;
	size_t ntoks;
	size_t nstars;
};

struct kiln_ignore {
	struct ipat *p;
	size_t n;
	bool exceptions;
};

/* Go's filepath.Match syntax check (the pattern is matched against "."). */
static bool class_char(const char **pp, const char *end, int32_t *r)
{
	const char *p = *pp;
	if (p >= end || *p == '-' || *p == ']')
		return false;
	if (*p == '\\') {
		p++;
		if (p >= end)
			return false;
	}
	size_t w;
	*r = dec(p, (size_t)(end - p), &w);
	if (*r == 0xfffd && w == 1 && (unsigned char)*p >= 0x80)
		return false;
	p += w;
	if (p >= end)
		return false;
	*pp = p;
	return true;
}

/* Parse a class starting after '['; fills t; *pp ends after ']'. */
static bool parse_class(const char **pp, const char *end, struct tok *t)
{
	const char *p = *pp;
	t->kind = T_CLASS;
	t->negated = false;
	if (p < end && *p == '^') {
		t->negated = true;
		p++;
	}
	size_t cap = 4;
	t->ranges = kiln_xcalloc(cap, sizeof(struct range));
	t->nranges = 0;
	for (;;) {
		if (p < end && *p == ']' && t->nranges > 0) {
			p++;
			break;
		}
		int32_t lo, hi;
		if (!class_char(&p, end, &lo))
			return false;
		hi = lo;
		if (*p == '-') {
			p++;
			if (!class_char(&p, end, &hi))
				return false;
			if (hi < lo)
				return false;
		}
		if (t->nranges == cap) {
			cap *= 2;
			t->ranges = kiln_xrealloc(t->ranges, cap * sizeof(struct range));
		}
		t->ranges[t->nranges].lo = lo;
		t->ranges[t->nranges].hi = hi;
		t->nranges++;
	}
	*pp = p;
	return true;
}

static void toks_free(struct tok *t, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(t[i].ranges);
	free(t);
}

static bool valid_pattern(const char *p)
{
	const char *end = p + strlen(p);
	while (p < end) {
		if (*p == '\\') {
			p++;
			if (p >= end)
				return false;
			size_t w;
			dec(p, (size_t)(end - p), &w);
			p += w;
		} else if (*p == '[') {
			p++;
			struct tok t = {0};
			bool ok = parse_class(&p, end, &t);
			free(t.ranges);
			if (!ok)
				return false;
		} else {
			p++;
		}
	}
	return true;
}

/* patternmatcher's compile(): decide the match type and build tokens. */
static void compile(struct ipat *ip)
{
	const char *p = ip->text, *end = p + strlen(p);
	size_t cap = strlen(p) + 1;
	ip->toks = kiln_xcalloc(cap, sizeof(struct tok));
	ip->ntoks = 0;
	enum match_type type = M_EXACT;
	for (size_t i = 0; p < end; i++) {
		struct tok *t = &ip->toks[ip->ntoks];
		char ch = *p++;
		if (ch == '*') {
			if (p < end && *p == '*') {
				p++;
				if (p < end && *p == '/')
					p++;
				if (p >= end) {
					if (type == M_EXACT) {
						type = M_PREFIX;
					} else {
						t->kind = T_DSTAR_END;
						ip->ntoks++;
						type = M_REGEXP;
					}
				} else {
					t->kind = T_DSTAR;
					ip->ntoks++;
					type = M_REGEXP;
				}
				if (i == 0)
					type = M_SUFFIX;
			} else {
				t->kind = T_STAR;
				ip->ntoks++;
				type = M_REGEXP;
			}
		} else if (ch == '?') {
			t->kind = T_QMARK;
			ip->ntoks++;
			type = M_REGEXP;
		} else if (ch == '\\') {
			if (p < end) {
				size_t w;
				dec(p, (size_t)(end - p), &w);
				for (size_t k = 0; k < w; k++) {
					ip->toks[ip->ntoks].kind = T_LIT;
					ip->toks[ip->ntoks].c = (unsigned char)p[k];
					ip->ntoks++;
				}
				p += w;
				type = M_REGEXP;
			} else {
				t->kind = T_LIT;
				t->c = '\\';
				ip->ntoks++;
			}
		} else if (ch == '[') {
			if (!parse_class(&p, end, t)) {
				/* cannot happen: validated before */
				free(t->ranges);
				t->ranges = NULL;
				t->kind = T_LIT;
				t->c = '[';
			}
			ip->ntoks++;
			type = M_REGEXP;
		} else if (ch == ']') {
			t->kind = T_LIT;
			t->c = ']';
			ip->ntoks++;
			type = M_REGEXP;
		} else {
			t->kind = T_LIT;
			t->c = (unsigned char)ch;
			ip->ntoks++;
		}
	}
	ip->type = type;
	ip->nstars = 0;
	for (size_t k = 0; k < ip->ntoks; k++)
		if (ip->toks[k].kind == T_STAR || ip->toks[k].kind == T_DSTAR || ip->toks[k].kind == T_DSTAR_END)
			ip->toks[k].star = ip->nstars++;
}

/* ------------------------------------------------------------ matcher */

struct mstate {
	const struct tok *t;
	size_t nt;
	const char *s;
	size_t len;
	bool partial;      /* success when the input runs out (prefix viability) */
	uint8_t *failed;
};

static bool mfailed(struct mstate *m, size_t ti, size_t si)
{
	size_t bit = ti * (m->len + 1) + si;
	return m->failed[bit / 8] & (1u << (bit % 8));
}

static void msetfailed(struct mstate *m, size_t ti, size_t si)
{
	size_t bit = ti * (m->len + 1) + si;
	m->failed[bit / 8] |= (uint8_t)(1u << (bit % 8));
}

static bool class_has(const struct tok *t, int32_t r)
{
	bool in = false;
	for (size_t i = 0; i < t->nranges; i++)
		if (r >= t->ranges[i].lo && r <= t->ranges[i].hi) {
			in = true;
			break;
		}
	return in != t->negated;
}

/* Literals, '?' and classes are walked in a loop; only the wildcards
 * branch (recursion depth = number of wildcards), and a failed (wildcard,
 * position) pair is remembered. */
static bool mrun(struct mstate *m, size_t ti, size_t si)
{
	size_t w;
	for (;;) {
		if (si == m->len && m->partial)
			return true;
		if (ti == m->nt)
			return si == m->len;
		const struct tok *t = &m->t[ti];
		if (t->kind == T_LIT) {
			if (si >= m->len || (unsigned char)m->s[si] != t->c)
				return false;
			si++;
			ti++;
			continue;
		}
		if (t->kind == T_QMARK) {
			if (si >= m->len || m->s[si] == '/')
				return false;
			dec(m->s + si, m->len - si, &w);
			si += w;
			ti++;
			continue;
		}
		if (t->kind == T_CLASS) {
			if (si >= m->len)
				return false;
			int32_t r = dec(m->s + si, m->len - si, &w);
			if (!class_has(t, r))
				return false;
			si += w;
			ti++;
			continue;
		}
		break;
	}
	const struct tok *t = &m->t[ti];
	if (mfailed(m, t->star, si))
		return false;
	bool ok = false;
	switch (t->kind) {
	case T_STAR: {
		size_t e = si;
		for (;;) {
			if (mrun(m, ti + 1, e)) {
				ok = true;
				break;
			}
			if (e >= m->len || m->s[e] == '/')
				break;
			dec(m->s + e, m->len - e, &w);
			e += w;
		}
		break;
	}
	case T_DSTAR: /* empty, or anything (no newline) ending in a slash */
		if (mrun(m, ti + 1, si)) {
			ok = true;
			break;
		}
		for (size_t e = si; e < m->len && m->s[e] != '\n'; e++) {
			if (m->s[e] == '/' && mrun(m, ti + 1, e + 1)) {
				ok = true;
				break;
			}
		}
		if (!ok && m->partial && !memchr(m->s + si, '\n', m->len - si))
			ok = true; /* the rest of the input fits inside the optional group */
		break;
	case T_DSTAR_END:
		ok = !memchr(m->s + si, '\n', m->len - si) && mrun(m, ti + 1, m->len);
		break;
	default:
		break;
	}
	if (!ok)
		msetfailed(m, t->star, si);
	return ok;
}

static bool regex_match(const struct ipat *ip, const char *s, size_t len, bool partial)
{
	struct mstate m = {.t = ip->toks, .nt = ip->ntoks, .s = s, .len = len, .partial = partial};
	size_t bits = (ip->nstars + 1) * (len + 1);
	m.failed = kiln_xcalloc(bits / 8 + 1, 1);
	bool r = mrun(&m, 0, 0);
	free(m.failed);
	return r;
}

static bool pat_match(const struct ipat *ip, const char *path, size_t len)
{
	size_t tl = strlen(ip->text);
	switch (ip->type) {
	case M_EXACT:
		return len == tl && memcmp(path, ip->text, len) == 0;
	case M_PREFIX:
		return len >= tl - 2 && memcmp(path, ip->text, tl - 2) == 0;
	case M_SUFFIX: {
		const char *suf = ip->text + 2;
		size_t sl = tl - 2;
		if (len >= sl && memcmp(path + len - sl, suf, sl) == 0)
			return true;
		return sl > 0 && suf[0] == '/' && len == sl - 1 && memcmp(path, suf + 1, len) == 0;
	}
	case M_REGEXP:
		return regex_match(ip, path, len, false);
	}
	return false;
}

/* The pattern matches the path or one of its parent directories. */
static bool pat_match_or_parent(const struct ipat *ip, const char *path)
{
	size_t len = strlen(path);
	if (pat_match(ip, path, len))
		return true;
	for (size_t i = 0; i < len; i++)
		if (path[i] == '/' && pat_match(ip, path, i))
			return true;
	return false;
}

/* ------------------------------------------------------------- public */

static int add_pattern(struct kiln_ignore *ig, const char *raw, struct kiln_err *err)
{
	/* trim */
	while (*raw == ' ' || *raw == '\t' || *raw == '\r' || *raw == '\n' || *raw == '\v' || *raw == '\f')
		raw++;
	size_t n = strlen(raw);
	while (n > 0 && (raw[n - 1] == ' ' || raw[n - 1] == '\t' || raw[n - 1] == '\r' || raw[n - 1] == '\n' ||
			 raw[n - 1] == '\v' || raw[n - 1] == '\f'))
		n--;
	if (n == 0)
		return 0;
	char *t = kiln_xstrndup(raw, n);
	char *c = kiln_ignore_clean_path(t);
	free(t);
	bool excl = false;
	const char *body = c;
	if (c[0] == '!') {
		if (c[1] == 0) {
			free(c);
			return kiln_err_set(err, 0, "illegal exclusion pattern: \"!\" (write !PATTERN to re-include paths)");
		}
		excl = true;
		body = c + 1;
	}
	if (!valid_pattern(body)) {
		kiln_err_set(err, 0, "syntax error in pattern: %s (close every [ and do not end with a lone \\)", c);
		free(c);
		return -1;
	}
	ig->p = kiln_xrealloc(ig->p, (ig->n + 1) * sizeof(struct ipat));
	struct ipat *ip = &ig->p[ig->n++];
	memset(ip, 0, sizeof(*ip));
	ip->text = kiln_xstrdup(body);
	ip->exclusion = excl;
	if (excl)
		ig->exceptions = true;
	free(c);
	compile(ip);
	return 0;
}

int kiln_ignore_from_patterns(char *const *patterns, size_t n, struct kiln_ignore **out,
			      struct kiln_err *err)
{
	struct kiln_ignore *ig = kiln_xcalloc(1, sizeof(*ig));
	for (size_t i = 0; i < n; i++) {
		if (add_pattern(ig, patterns[i], err) < 0) {
			kiln_ignore_free(ig);
			return -1;
		}
	}
	*out = ig;
	return 0;
}

/* ignorefile.ReadAll: one cleaned pattern per useful line.  When lines is
 * not NULL it receives the 1-based line of each pattern (malloc'd). */
static void read_all(const char *text, size_t len, struct kiln_strv *out, int **lines)
{
	size_t i = 0;
	bool first = true;
	int lineno = 0;
	if (lines)
		*lines = NULL;
	while (i < len) {
		lineno++;
		size_t j = i;
		while (j < len && text[j] != '\n')
			j++;
		const char *l = text + i;
		size_t n = j - i;
		if (n && l[n - 1] == '\r')
			n--;
		if (first && n >= 3 && memcmp(l, "\xef\xbb\xbf", 3) == 0) {
			l += 3;
			n -= 3;
		}
		first = false;
		i = j + 1;
		if (n && l[0] == '#')
			continue;
		while (n && (l[0] == ' ' || l[0] == '\t' || l[0] == '\v' || l[0] == '\f' || l[0] == '\r')) {
			l++;
			n--;
		}
		while (n && (l[n - 1] == ' ' || l[n - 1] == '\t' || l[n - 1] == '\v' || l[n - 1] == '\f' ||
			     l[n - 1] == '\r'))
			n--;
		if (n == 0)
			continue;
		bool invert = l[0] == '!';
		if (invert) {
			l++;
			n--;
			while (n && (l[0] == ' ' || l[0] == '\t' || l[0] == '\v' || l[0] == '\f' || l[0] == '\r')) {
				l++;
				n--;
			}
		}
		char *pat;
		if (n > 0) {
			char *t = kiln_xstrndup(l, n);
			pat = kiln_ignore_clean_path(t);
			free(t);
			if (strlen(pat) > 1 && pat[0] == '/')
				memmove(pat, pat + 1, strlen(pat));
		} else {
			pat = kiln_xstrdup("");
		}
		if (invert) {
			char *x = kiln_xasprintf("!%s", pat);
			free(pat);
			pat = x;
		}
		kiln_strv_push_owned(out, pat);
		if (lines) {
			*lines = kiln_xrealloc(*lines, out->n * sizeof(int));
			(*lines)[out->n - 1] = lineno;
		}
	}
}

/* Parse ignore-file text; errors are "<name>:<line>: <what> (<hint>)". */
static int parse_named(const char *text, size_t len, const char *name, struct kiln_ignore **out,
		       struct kiln_err *err)
{
	struct kiln_strv pats = {0};
	int *lines = NULL;
	read_all(text ? text : "", text ? len : 0, &pats, &lines);
	struct kiln_ignore *ig = kiln_xcalloc(1, sizeof(*ig));
	int r = 0;
	for (size_t i = 0; i < pats.n; i++) {
		if (add_pattern(ig, pats.v[i], err) < 0) {
			kiln_err_wrap(err, "%s:%d", name, lines[i]);
			kiln_ignore_free(ig);
			ig = NULL;
			r = -1;
			break;
		}
	}
	free(lines);
	kiln_strv_free(&pats);
	if (r == 0)
		*out = ig;
	return r;
}

int kiln_ignore_parse(const char *text, size_t len, struct kiln_ignore **out, struct kiln_err *err)
{
	return parse_named(text, len, ".dockerignore", out, err);
}

static int try_load(int dirfd, const char *path, struct kiln_ignore **out, bool *found, struct kiln_err *err)
{
	*found = false;
	int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			return 0;
		return kiln_err_set(err, errno, "open %s", path);
	}
	char *data = NULL;
	size_t len = 0;
	int r = kiln_read_fd(fd, 16 * 1024 * 1024, &data, &len, err);
	close(fd);
	if (r < 0)
		return kiln_err_wrap(err, "read %s", path);
	*found = true;
	r = parse_named(data, len, path, out, err);
	free(data);
	return r;
}

static int load(int ctx_fd, const char *context_dir, const char *dockerfile_path, struct kiln_ignore **out,
		char **used_path, struct kiln_err *err)
{
	bool found = false;
	if (used_path)
		*used_path = NULL;
	if (dockerfile_path && *dockerfile_path && strcmp(dockerfile_path, "-") != 0) {
		char *path = kiln_xasprintf("%s.dockerignore", dockerfile_path);
		int r = try_load(AT_FDCWD, path, out, &found, err);
		if (r == 0 && found && used_path)
			*used_path = path;
		else
			free(path);
		if (r < 0)
			return -1;
		if (found)
			return 0;
	}
	if (ctx_fd >= 0 || context_dir) {
		char *path = ctx_fd >= 0 ? kiln_xstrdup(".dockerignore")
					  : kiln_xasprintf("%s/.dockerignore", context_dir);
		int r = try_load(ctx_fd >= 0 ? ctx_fd : AT_FDCWD, path, out, &found, err);
		if (r == 0 && found && used_path)
			*used_path = path;
		else
			free(path);
		if (r < 0)
			return -1;
		if (found)
			return 0;
	}
	*out = kiln_xcalloc(1, sizeof(struct kiln_ignore));
	return 0;
}

int kiln_ignore_load(const char *context_dir, const char *dockerfile_path, struct kiln_ignore **out,
		     char **used_path, struct kiln_err *err)
{
	return load(-1, context_dir, dockerfile_path, out, used_path, err);
}

int kiln_ignore_load_at(int context_dirfd, const char *dockerfile_path, struct kiln_ignore **out,
			char **used_path, struct kiln_err *err)
{
	return load(context_dirfd, NULL, dockerfile_path, out, used_path, err);
}

static char *norm_path(const char *path)
{
	char *c = kiln_ignore_clean_path(path ? path : "");
	if (c[0] == '/') {
		char *x = kiln_ignore_clean_path(c + 1);
		free(c);
		c = x;
	}
	return c;
}

bool kiln_ignore_match(const struct kiln_ignore *ig, const char *path)
{
	if (!ig || ig->n == 0)
		return false;
	char *p = norm_path(path);
	if (strcmp(p, ".") == 0) {
		free(p);
		return false;
	}
	bool matched = false;
	for (size_t i = 0; i < ig->n; i++) {
		const struct ipat *ip = &ig->p[i];
		if (ip->exclusion != matched)
			continue;
		if (pat_match_or_parent(ip, p))
			matched = !ip->exclusion;
	}
	free(p);
	return matched;
}

bool kiln_ignore_dir_may_include(const struct kiln_ignore *ig, const char *dir)
{
	if (!ig || !ig->exceptions)
		return false;
	char *d = norm_path(dir);
	if (strcmp(d, ".") == 0) {
		free(d);
		return true;
	}
	char *ds = kiln_xasprintf("%s/", d);
	size_t dl = strlen(ds);
	bool may = false;
	for (size_t i = 0; i < ig->n && !may; i++) {
		const struct ipat *ip = &ig->p[i];
		if (!ip->exclusion)
			continue;
		if (pat_match_or_parent(ip, d)) {
			may = true;
			break;
		}
		size_t tl = strlen(ip->text);
		switch (ip->type) {
		case M_EXACT:
			may = tl > dl && memcmp(ip->text, ds, dl) == 0;
			break;
		case M_PREFIX: {
			size_t pl = tl - 2;
			size_t m = pl < dl ? pl : dl;
			may = memcmp(ip->text, ds, m) == 0;
			break;
		}
		case M_SUFFIX:
			may = true;
			break;
		case M_REGEXP:
			may = regex_match(ip, ds, dl, true);
			break;
		}
	}
	free(ds);
	free(d);
	return may;
}

bool kiln_ignore_has_exceptions(const struct kiln_ignore *ig)
{
	return ig && ig->exceptions;
}

size_t kiln_ignore_count(const struct kiln_ignore *ig)
{
	return ig ? ig->n : 0;
}

const char *kiln_ignore_pattern(const struct kiln_ignore *ig, size_t i, bool *exception)
{
	if (!ig || i >= ig->n)
		return NULL;
	if (exception)
		*exception = ig->p[i].exclusion;
	return ig->p[i].text;
}

void kiln_ignore_free(struct kiln_ignore *ig)
{
	if (!ig)
		return;
	for (size_t i = 0; i < ig->n; i++) {
		free(ig->p[i].text);
		toks_free(ig->p[i].toks, ig->p[i].ntoks);
	}
	free(ig->p);
	free(ig);
}
