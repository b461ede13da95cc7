/* kiln — Docker's shell-word expansion.  See expand.h for the rules. */
#include "parser/expand.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ env */

static ssize_t env_find(const struct kiln_env *env, const char *key)
{
	if (!env)
		return -1;
	for (size_t i = 0; i < env->n; i++)
		if (strcmp(env->v[i].key, key) == 0)
			return (ssize_t)i;
	return -1;
}

void kiln_env_set(struct kiln_env *env, const char *key, const char *value)
{
	ssize_t i = env_find(env, key);
	if (i >= 0) {
		char *nv = kiln_xstrdup(value ? value : "");
		free(env->v[i].value);
		env->v[i].value = nv;
		return;
	}
	if (env->n == env->cap) {
		env->cap = env->cap ? env->cap * 2 : 8;
		env->v = kiln_xrealloc(env->v, env->cap * sizeof(*env->v));
	}
	env->v[env->n].key = kiln_xstrdup(key);
	env->v[env->n].value = kiln_xstrdup(value ? value : "");
	env->n++;
}

void kiln_env_set_kv(struct kiln_env *env, const char *kv)
{
	const char *eq = strchr(kv, '=');
	if (!eq) {
		kiln_env_set(env, kv, "");
		return;
	}
	char *key = kiln_xstrndup(kv, (size_t)(eq - kv));
	kiln_env_set(env, key, eq + 1);
	free(key);
}

const char *kiln_env_get(const struct kiln_env *env, const char *key)
{
	ssize_t i = env_find(env, key);
	return i >= 0 ? env->v[i].value : NULL;
}

bool kiln_env_has(const struct kiln_env *env, const char *key)
{
	return env_find(env, key) >= 0;
}

bool kiln_env_unset(struct kiln_env *env, const char *key)
{
	ssize_t i = env_find(env, key);
	if (i < 0)
		return false;
	free(env->v[i].key);
	free(env->v[i].value);
	memmove(&env->v[i], &env->v[i + 1], (env->n - (size_t)i - 1) * sizeof(*env->v));
	env->n--;
	return true;
}

void kiln_env_copy(struct kiln_env *dst, const struct kiln_env *src)
{
	if (dst == src)
		return;
	kiln_env_free(dst);
	if (!src)
		return;
	for (size_t i = 0; i < src->n; i++)
		kiln_env_set(dst, src->v[i].key, src->v[i].value);
}

char **kiln_env_to_strv(const struct kiln_env *env)
{
	size_t n = env ? env->n : 0;
	char **v = kiln_xcalloc(n + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++)
		v[i] = kiln_xasprintf("%s=%s", env->v[i].key, env->v[i].value);
	return v;
}

void kiln_env_free(struct kiln_env *env)
{
	if (!env)
		return;
	for (size_t i = 0; i < env->n; i++) {
		free(env->v[i].key);
		free(env->v[i].value);
	}
	free(env->v);
	env->v = NULL;
	env->n = env->cap = 0;
}

/* ------------------------------------------------------------ unicode */

#define LEX_EOF (-1)

/* Decode one UTF-8 sequence; an invalid byte is one U+FFFD "rune" of width 1
 * (its byte is copied through unchanged). */
static int32_t utf8_decode(const unsigned char *s, size_t len, size_t *w)
{
	unsigned char c = s[0];
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
		if ((s[i] & 0xc0) != 0x80) {
			*w = 1;
			return 0xfffd;
		}
		r = (r << 6) | (s[i] & 0x3f);
	}
	if ((need == 2 && r < 0x80) || (need == 3 && r < 0x800) || (need == 4 && (r < 0x10000 || r > 0x10ffff)) ||
	    (r >= 0xd800 && r <= 0xdfff)) {
		*w = 1;
		return 0xfffd;
	}
	*w = need;
	return r;
}

static bool u_isspace(int32_t r)
{
	switch (r) {
	case ' ': case '\t': case '\n': case '\v': case '\f': case '\r':
	case 0x85: case 0xa0: case 0x1680: case 0x2028: case 0x2029: case 0x202f: case 0x205f: case 0x3000:
		return true;
	}
	return r >= 0x2000 && r <= 0x200a;
}

static bool u_isdigit(int32_t r)
{
	return r >= '0' && r <= '9';
}

/* Letters as Go's unicode.IsLetter, approximately for non-ASCII: most code
 * points of scripts are letters; common punctuation/symbol blocks are not. */
static bool u_isletter(int32_t r)
{
	if (r < 0x80)
		return (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z');
	if (r == 0xaa || r == 0xb5 || r == 0xba)
		return true;
	if (r < 0xc0 || r == 0xd7 || r == 0xf7)
		return false;
	if ((r >= 0x300 && r <= 0x36f) || (r >= 0x1ab0 && r <= 0x1aff) || (r >= 0x1dc0 && r <= 0x1dff) ||
	    (r >= 0xfe20 && r <= 0xfe2f) || (r >= 0x2e00 && r <= 0x2e7f)) /* combining marks, punctuation */
		return false;
	if ((r >= 0x2000 && r <= 0x2bff) || (r >= 0x3000 && r <= 0x303f) || (r >= 0xe000 && r <= 0xf8ff) ||
	    (r >= 0xfe30 && r <= 0xfe4f) || (r >= 0xff00 && r <= 0xff20) || (r >= 0xfff0 && r <= 0xffff) ||
	    (r >= 0x1f000 && r <= 0x1faff))
		return false;
	return true;
}

/* ---------------------------------------------------------- the lexer */

struct words {
	struct kiln_buf word;
	bool in_word;
	struct kiln_strv *out;
};

static void words_push(struct words *w)
{
	if (w->word.len > 0) {
		kiln_strv_push_owned(w->out, kiln_buf_steal(&w->word));
		w->in_word = false;
	}
}

static void words_add_raw(struct words *w, const char *s, size_t n)
{
	if (!w)
		return;
	kiln_buf_append(&w->word, s, n);
	w->in_word = true;
}

/* A character outside quotes: blanks separate words. */
static void words_add_char(struct words *w, const char *s, size_t n, int32_t r)
{
	if (!w)
		return;
	if (u_isspace(r)) {
		if (w->in_word && w->word.len != 0)
			words_push(w);
		return;
	}
	words_add_raw(w, s, n);
}

/* An expansion's value outside quotes: split on its blanks. */
static void words_add_string(struct words *w, const char *s, size_t n)
{
	if (!w)
		return;
	size_t i = 0;
	while (i < n) {
		size_t cw;
		int32_t r = utf8_decode((const unsigned char *)s + i, n - i, &cw);
		words_add_char(w, s + i, cw, r);
		i += cw;
	}
}

struct lex {
	const char *s;
	size_t len;
	size_t pos;
	char escape;
	bool raw_escapes;
	bool skip_unset;
	bool skip_quotes;
	const struct kiln_env *env;
	struct kiln_strv *refs;
	char msg[KILN_ERR_MSG_MAX];
	unsigned depth;
};

#define LEX_MAX_DEPTH 200

static int32_t peek_w(struct lex *lx, size_t *w)
{
	if (lx->pos >= lx->len) {
		*w = 0;
		return LEX_EOF;
	}
	return utf8_decode((const unsigned char *)lx->s + lx->pos, lx->len - lx->pos, w);
}

static int32_t peek(struct lex *lx)
{
	size_t w;
	return peek_w(lx, &w);
}

/* Consume one character; its bytes are s[*start .. *start + *w). */
static int32_t next_c(struct lex *lx, size_t *start, size_t *w)
{
	int32_t r = peek_w(lx, w);
	*start = lx->pos;
	lx->pos += *w;
	return r;
}

static int lex_fail(struct lex *lx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int lex_fail(struct lex *lx, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(lx->msg, sizeof(lx->msg), fmt, ap);
	va_end(ap);
	return -1;
}

static const char *get_env(struct lex *lx, const char *name, bool *set)
{
	if (lx->refs) {
		bool seen = false;
		for (size_t i = 0; i < lx->refs->n; i++)
			if (strcmp(lx->refs->v[i], name) == 0) {
				seen = true;
				break;
			}
		if (!seen)
			kiln_strv_push(lx->refs, name);
	}
	const char *v = kiln_env_get(lx->env, name);
	*set = v != NULL;
	return v ? v : "";
}

static bool is_special_param(int32_t r)
{
	switch (r) {
	case '@': case '*': case '#': case '?': case '-': case '$': case '!': case '0':
		return true;
	}
	return false;
}

static char *process_name(struct lex *lx)
{
	struct kiln_buf name = {0};
	kiln_buf_puts(&name, "");
	size_t st, w;
	while (peek(lx) != LEX_EOF) {
		int32_t r = peek(lx);
		if (name.len == 0 && u_isdigit(r)) {
			while (u_isdigit(peek(lx))) {
				next_c(lx, &st, &w);
				kiln_buf_append(&name, lx->s + st, w);
			}
			return kiln_buf_steal(&name);
		}
		if (name.len == 0 && is_special_param(r)) {
			next_c(lx, &st, &w);
			kiln_buf_append(&name, lx->s + st, w);
			return kiln_buf_steal(&name);
		}
		if (!u_isletter(r) && !u_isdigit(r) && r != '_')
			break;
		next_c(lx, &st, &w);
		kiln_buf_append(&name, lx->s + st, w);
	}
	return kiln_buf_steal(&name);
}

static int process_stop_on(struct lex *lx, int32_t stop, bool raw, struct kiln_buf *result, struct kiln_strv *wordsv);
static int process_dollar(struct lex *lx, struct kiln_buf *out);

static int process_single_quote(struct lex *lx, struct kiln_buf *out)
{
	size_t st, w;
	next_c(lx, &st, &w);
	for (;;) {
		int32_t r = next_c(lx, &st, &w);
		if (r == LEX_EOF)
			return lex_fail(lx, "unexpected end of statement while looking for matching single-quote");
		if (r == '\'')
			return 0;
		kiln_buf_append(out, lx->s + st, w);
	}
}

static int process_double_quote(struct lex *lx, struct kiln_buf *out)
{
	size_t st, w;
	next_c(lx, &st, &w);
	for (;;) {
		int32_t r = peek(lx);
		if (r == LEX_EOF)
			return lex_fail(lx, "unexpected end of statement while looking for matching double-quote");
		if (r == '"') {
			next_c(lx, &st, &w);
			return 0;
		}
		if (r == '$') {
			if (process_dollar(lx, out) < 0)
				return -1;
			continue;
		}
		r = next_c(lx, &st, &w);
		if (r == (unsigned char)lx->escape) {
			if (lx->raw_escapes)
				kiln_buf_append(out, lx->s + st, w);
			int32_t p = peek(lx);
			if (p == LEX_EOF)
				continue;
			if (p == '"' || p == '$' || p == (unsigned char)lx->escape)
				next_c(lx, &st, &w);
		}
		kiln_buf_append(out, lx->s + st, w);
	}
}

/* ---- shell patterns for # % / modifiers */

enum ptok_kind { PT_LIT, PT_ANY, PT_STAR };
struct ptok {
	enum ptok_kind kind;
	char lit[4];
	unsigned char litlen;
	size_t star;      /* PT_STAR: its ordinal among the stars (the memo row) */
};
struct pattern {
	struct ptok *t;
	size_t n;
	size_t nstars;
};

static int pattern_compile(const char *p, struct pattern *out, char *why, size_t whylen)
{
	size_t len = strlen(p);
	out->t = kiln_xcalloc(len + 1, sizeof(struct ptok));
	out->n = 0;
	out->nstars = 0;
	size_t i = 0;
	while (i < len) {
		size_t w;
		int32_t r = utf8_decode((const unsigned char *)p + i, len - i, &w);
		struct ptok *t = &out->t[out->n];
		if (r == '*') {
			/* consecutive stars match what one star matches */
			if (out->n == 0 || out->t[out->n - 1].kind != PT_STAR) {
				t->kind = PT_STAR;
				t->star = out->nstars++;
				out->n++;
			}
			i += w;
			continue;
		}
		if (r == '?') {
			t->kind = PT_ANY;
			out->n++;
			i += w;
			continue;
		}
		if (r == '\\') {
			i += w;
			if (i < len && (p[i] == '}' || p[i] == '/'))
				continue;
			if (i >= len) {
				snprintf(why, whylen, "invalid escape '\\'");
				free(out->t);
				out->t = NULL;
				return -1;
			}
			r = utf8_decode((const unsigned char *)p + i, len - i, &w);
			if (r != '*' && r != '?' && r != '\\') {
				snprintf(why, whylen, "invalid escape '\\%.*s'", (int)w, p + i);
				free(out->t);
				out->t = NULL;
				return -1;
			}
		}
		t->kind = PT_LIT;
		memcpy(t->lit, p + i, w);
		t->litlen = (unsigned char)w;
		out->n++;
		i += w;
	}
	return 0;
}

struct pmatch {
	const struct pattern *pat;
	const char *s;
	size_t len;
	bool greedy;
	uint8_t *failed; /* bitset nstars x (len + 1): (star, position) known to fail */
};

static bool pm_failed(struct pmatch *m, size_t ti, size_t si)
{
	size_t bit = m->pat->t[ti].star * (m->len + 1) + si;
	return m->failed[bit / 8] & (1u << (bit % 8));
}

static void pm_setfailed(struct pmatch *m, size_t ti, size_t si)
{
	size_t bit = m->pat->t[ti].star * (m->len + 1) + si;
	m->failed[bit / 8] |= (uint8_t)(1u << (bit % 8));
}

/* The rune boundary before e (e > lo). */
static size_t prev_boundary(const char *s, size_t len, size_t lo, size_t e)
{
	size_t pe = e - 1;
	while (pe > lo && ((unsigned char)s[pe] & 0xc0) == 0x80)
		pe--;
	size_t w;
	utf8_decode((const unsigned char *)s + pe, len - pe, &w);
	if (pe + w != e)
		pe = e - 1; /* inside an invalid sequence: bytes are runes of their own */
	return pe;
}

struct pframe {
	size_t ti, si, cur, maxe;
};

/* Match tokens from ti at text position si (anchored start, free end), in
 * the order a backtracking regex engine prefers (greedy: longest first;
 * lazy: shortest first); returns the end or -1.  Iterative, with an
 * explicit stack of star choices; failed (star, position) pairs are
 * remembered, so the work is bounded by tokens x text. */
static ssize_t pm_run(struct pmatch *m, size_t ti, size_t si)
{
	struct pframe *st = NULL;
	size_t nst = 0, cap = 0;
	ssize_t result = -1;
	for (;;) {
		/* literals and '?' */
		bool ok = true;
		while (ti < m->pat->n && m->pat->t[ti].kind != PT_STAR) {
			const struct ptok *t = &m->pat->t[ti];
			if (t->kind == PT_LIT) {
				if (si + t->litlen > m->len || memcmp(m->s + si, t->lit, t->litlen) != 0) {
					ok = false;
					break;
				}
				si += t->litlen;
			} else {
				size_t w;
				if (si >= m->len || m->s[si] == '\n') {
					ok = false;
					break;
				}
				utf8_decode((const unsigned char *)m->s + si, m->len - si, &w);
				si += w;
			}
			ti++;
		}
		if (ok && ti == m->pat->n) {
			result = (ssize_t)si;
			break;
		}
		if (ok && !pm_failed(m, ti, si)) {
			/* a star: push its choices */
			size_t maxe = si;
			while (maxe < m->len && m->s[maxe] != '\n') {
				size_t w;
				utf8_decode((const unsigned char *)m->s + maxe, m->len - maxe, &w);
				maxe += w;
			}
			if (nst == cap) {
				cap = cap ? cap * 2 : 16;
				st = kiln_xrealloc(st, cap * sizeof(*st));
			}
			struct pframe *f = &st[nst++];
			f->ti = ti;
			f->si = si;
			f->maxe = maxe;
			f->cur = m->greedy ? maxe : si;
			ti = ti + 1;
			si = f->cur;
			continue;
		}
		/* backtrack to the next choice of the innermost star */
		bool resumed = false;
		while (nst > 0) {
			struct pframe *f = &st[nst - 1];
			bool more;
			if (m->greedy) {
				more = f->cur > f->si;
				if (more)
					f->cur = prev_boundary(m->s, m->len, f->si, f->cur);
			} else {
				more = f->cur < f->maxe;
				if (more) {
					size_t w;
					utf8_decode((const unsigned char *)m->s + f->cur, m->len - f->cur, &w);
					f->cur += w;
				}
			}
			if (more) {
				ti = f->ti + 1;
				si = f->cur;
				resumed = true;
				break;
			}
			pm_setfailed(m, f->ti, f->si);
			nst--;
		}
		if (!resumed)
			break;
	}
	free(st);
	return result;
}

#define PM_MAX_MEMO_BITS ((size_t)1 << 28)

/* Returns -1 when the pattern is too complex for the text (the memo would
 * exceed 32 MiB). */
static int pm_init(struct pmatch *m, const struct pattern *pat, const char *s, size_t len, bool greedy)
{
	m->pat = pat;
	m->s = s;
	m->len = len;
	m->greedy = greedy;
	m->failed = NULL;
	if (pat->nstars && (len + 1) > PM_MAX_MEMO_BITS / pat->nstars)
		return -1;
	size_t bits = pat->nstars * (len + 1);
	m->failed = kiln_xcalloc(bits / 8 + 1, 1);
	return 0;
}

/* Reverse a string rune by rune (invalid bytes stay single). */
static char *reverse_runes(const char *s, size_t len)
{
	char *out = kiln_xmalloc(len + 1);
	size_t i = 0;
	while (i < len) {
		size_t w;
		utf8_decode((const unsigned char *)s + i, len - i, &w);
		memcpy(out + len - i - w, s + i, w);
		i += w;
	}
	out[len] = 0;
	return out;
}

int kiln_expand_trim(const char *value, const char *pattern, bool suffix, bool longest, char **out,
		     struct kiln_err *err)
{
	struct pattern pat;
	char why[256];
	if (pattern_compile(pattern, &pat, why, sizeof(why)) < 0)
		return kiln_err_set(err, 0, "invalid pattern (%s) in substitution: %s", pattern, why);
	size_t len = strlen(value);
	struct pmatch m;
	if (pm_init(&m, &pat, value, len, longest) < 0) {
		free(pat.t);
		return kiln_err_set(err, 0, "substitution pattern too complex (%zu wildcards for %zu bytes)",
				    pat.nstars, len);
	}
	free(m.failed);
	if (!suffix) {
		pm_init(&m, &pat, value, len, longest);
		ssize_t e = pm_run(&m, 0, 0);
		free(m.failed);
		*out = kiln_xstrdup(e >= 0 ? value + e : value);
	} else {
		/* reverse both the pattern and the text: the shortest/longest
		 * suffix becomes a prefix */
		for (size_t i = 0; i < pat.n / 2; i++) {
			struct ptok tmp = pat.t[i];
			pat.t[i] = pat.t[pat.n - 1 - i];
			pat.t[pat.n - 1 - i] = tmp;
		}
		char *rev = reverse_runes(value, len);
		pm_init(&m, &pat, rev, len, longest);
		ssize_t e = pm_run(&m, 0, 0);
		free(m.failed);
		free(rev);
		*out = kiln_xstrndup(value, e >= 0 ? len - (size_t)e : len);
	}
	free(pat.t);
	return 0;
}

/* Go's regexp template expansion for ReplaceAllString: only $0 / ${0}
 * (the whole match) exists; other names give ""; $$ is $. */
static void append_template(struct kiln_buf *b, const char *tmpl, const char *match, size_t mlen)
{
	const char *p = tmpl;
	while (*p) {
		const char *d = strchr(p, '$');
		if (!d) {
			kiln_buf_puts(b, p);
			return;
		}
		kiln_buf_append(b, p, (size_t)(d - p));
		p = d + 1;
		if (*p == '$') {
			kiln_buf_putc(b, '$');
			p++;
			continue;
		}
		const char *q = p;
		bool brace = false;
		if (*q == '{') {
			brace = true;
			q++;
		}
		const char *ns = q;
		while (*q) {
			size_t w;
			int32_t r = utf8_decode((const unsigned char *)q, strlen(q), &w);
			if (!u_isletter(r) && !u_isdigit(r) && r != '_')
				break;
			q += w;
		}
		size_t nlen = (size_t)(q - ns);
		if (nlen == 0 || (brace && *q != '}')) {
			kiln_buf_putc(b, '$');
			continue;
		}
		if (brace)
			q++;
		bool zero = nlen == 1 && ns[0] == '0';
		if (zero)
			kiln_buf_append(b, match, mlen);
		p = q;
	}
}

int kiln_expand_replace(const char *value, const char *pattern, const char *replacement, bool all,
			char **out, struct kiln_err *err)
{
	struct pattern pat;
	char why[256];
	if (pattern_compile(pattern, &pat, why, sizeof(why)) < 0)
		return kiln_err_set(err, 0, "invalid pattern (%s) in substitution: %s", pattern, why);
	size_t len = strlen(value);
	struct pmatch m;
	if (pm_init(&m, &pat, value, len, true) < 0) {
		free(pat.t);
		return kiln_err_set(err, 0, "substitution pattern too complex (%zu wildcards for %zu bytes)",
				    pat.nstars, len);
	}
	struct kiln_buf b = {0};
	kiln_buf_puts(&b, "");
	size_t search = 0, last_end = 0;
	bool any = false;
	while (search <= len) {
		/* leftmost match starting at or after search */
		ssize_t ms = -1, me = -1;
		size_t st = search;
		for (;;) {
			ssize_t e = pm_run(&m, 0, st);
			if (e >= 0) {
				ms = (ssize_t)st;
				me = e;
				break;
			}
			if (st >= len)
				break;
			size_t w;
			utf8_decode((const unsigned char *)value + st, len - st, &w);
			st += w;
		}
		if (ms < 0)
			break;
		kiln_buf_append(&b, value + last_end, (size_t)ms - last_end);
		if (!all) {
			kiln_buf_puts(&b, replacement);
			last_end = (size_t)me;
			any = true;
			break;
		}
		if ((size_t)me > last_end || ms == 0)
			append_template(&b, replacement, value + ms, (size_t)(me - ms));
		last_end = (size_t)me;
		any = true;
		size_t w = 0;
		if (search < len)
			utf8_decode((const unsigned char *)value + search, len - search, &w);
		if (search + w > (size_t)me)
			search += w;
		else if (search + 1 > (size_t)me)
			search++;
		else
			search = (size_t)me;
	}
	(void)any;
	kiln_buf_puts(&b, value + last_end);
	free(m.failed);
	free(pat.t);
	*out = kiln_buf_steal(&b);
	return 0;
}

static void emit_unset_raw(struct kiln_buf *out, const char *name, const char *mod, const char *word)
{
	kiln_buf_printf(out, "${%s%s%s}", name, mod, word);
}

static int process_dollar(struct lex *lx, struct kiln_buf *out)
{
	size_t st, w;
	next_c(lx, &st, &w); /* '$' */
	if (peek(lx) != '{') {
		char *name = process_name(lx);
		if (!*name) {
			kiln_buf_putc(out, '$');
			free(name);
			return 0;
		}
		bool set;
		const char *v = get_env(lx, name, &set);
		if (!set && lx->skip_unset)
			kiln_buf_printf(out, "$%s", name);
		else
			kiln_buf_puts(out, v);
		free(name);
		return 0;
	}
	next_c(lx, &st, &w); /* '{' */
	int32_t p = peek(lx);
	if (p == LEX_EOF)
		return lex_fail(lx, "syntax error: missing '}'");
	if (p == '{' || p == '}' || p == ':')
		return lex_fail(lx, "syntax error: bad substitution");
	if (++lx->depth > LEX_MAX_DEPTH)
		return lex_fail(lx, "syntax error: substitutions nested too deeply");
	int rc = -1;
	char *name = process_name(lx);
	char *word = NULL, *pattern = NULL, *repl = NULL;
	struct kiln_buf wb = {0};
	int32_t ch = next_c(lx, &st, &w);
	char chs[16] = "";
	if (ch == LEX_EOF) {
		lex_fail(lx, "syntax error: missing '}'");
		goto out;
	}
	snprintf(chs, sizeof(chs), "%.*s", (int)w, lx->s + st);
	bool null_is_unset = false;
	bool set;
	const char *value;

	if (ch == '}') {
		value = get_env(lx, name, &set);
		if (!set && lx->skip_unset)
			kiln_buf_printf(out, "${%s}", name);
		else
			kiln_buf_puts(out, value);
		rc = 0;
		goto out;
	}
	if (ch == ':') {
		null_is_unset = true;
		ch = next_c(lx, &st, &w);
		if (ch == LEX_EOF) {
			lex_fail(lx, "syntax error: missing '}'");
			goto out;
		}
		size_t cl = strlen(chs);
		snprintf(chs + cl, sizeof(chs) - cl, "%.*s", (int)w, lx->s + st);
		if (ch == '#' || ch == '%') {
			lex_fail(lx, "unsupported modifier (%s) in substitution", chs);
			goto out;
		}
	} else if (ch == '/') {
		bool all = peek(lx) == '/';
		if (all)
			next_c(lx, &st, &w);
		struct kiln_buf pb = {0};
		kiln_buf_puts(&pb, "");
		if (process_stop_on(lx, '/', true, &pb, NULL) < 0) {
			kiln_buf_free(&pb);
			if (peek(lx) == LEX_EOF)
				lex_fail(lx, "syntax error: missing '/' in ${}");
			goto out;
		}
		pattern = kiln_buf_steal(&pb);
		struct kiln_buf rb = {0};
		kiln_buf_puts(&rb, "");
		if (process_stop_on(lx, '}', true, &rb, NULL) < 0) {
			kiln_buf_free(&rb);
			if (peek(lx) == LEX_EOF)
				lex_fail(lx, "syntax error: missing '}'");
			goto out;
		}
		repl = kiln_buf_steal(&rb);
		value = get_env(lx, name, &set);
		if (lx->skip_unset && !set) {
			kiln_buf_printf(out, "${%s/%s/%s}", name, pattern, repl);
			rc = 0;
			goto out;
		}
		char *res = NULL;
		struct kiln_err e2 = {0};
		if (kiln_expand_replace(value, pattern, repl, all, &res, &e2) < 0) {
			lex_fail(lx, "%s", e2.msg);
			goto out;
		}
		kiln_buf_puts(out, res);
		free(res);
		rc = 0;
		goto out;
	}

	if (!null_is_unset && ch != '+' && ch != '-' && ch != '?' && ch != '#' && ch != '%') {
		lex_fail(lx, "unsupported modifier (%s) in substitution", chs);
		goto out;
	}
	{
		bool raw = ch == '#' || ch == '%';
		kiln_buf_puts(&wb, "");
		if (process_stop_on(lx, '}', raw, &wb, NULL) < 0) {
			if (peek(lx) == LEX_EOF)
				lex_fail(lx, "syntax error: missing '}'");
			goto out;
		}
		word = kiln_buf_steal(&wb);
	}
	value = get_env(lx, name, &set);
	if (lx->skip_unset && !set) {
		emit_unset_raw(out, name, chs, word);
		rc = 0;
		goto out;
	}
	switch (ch) {
	case '-':
		kiln_buf_puts(out, (!set || (null_is_unset && !*value)) ? word : value);
		rc = 0;
		break;
	case '+':
		kiln_buf_puts(out, (!set || (null_is_unset && !*value)) ? "" : word);
		rc = 0;
		break;
	case '?':
		if (!set) {
			lex_fail(lx, "%s: %s", name, *word ? word : "is not allowed to be unset");
			break;
		}
		if (null_is_unset && !*value) {
			lex_fail(lx, "%s: %s", name, *word ? word : "is not allowed to be empty");
			break;
		}
		kiln_buf_puts(out, value);
		rc = 0;
		break;
	case '#':
	case '%': {
		bool greedy = false;
		const char *pat = word;
		if (*pat == (char)ch) {
			greedy = true;
			pat++;
		}
		char *res = NULL;
		struct kiln_err e2 = {0};
		if (kiln_expand_trim(value, pat, ch == '%', greedy, &res, &e2) < 0) {
			lex_fail(lx, "%s", e2.msg);
			break;
		}
		kiln_buf_puts(out, res);
		free(res);
		rc = 0;
		break;
	}
	default:
		lex_fail(lx, "unsupported modifier (%s) in substitution", chs);
		break;
	}
out:
	lx->depth--;
	kiln_buf_free(&wb);
	free(word);
	free(pattern);
	free(repl);
	free(name);
	return rc;
}

/* Process until the end (stop == LEX_EOF) or the unescaped, unquoted stop
 * character.  The unsplit text goes to result; words (top level only) to
 * wordsv. */
static int process_stop_on(struct lex *lx, int32_t stop, bool raw, struct kiln_buf *result, struct kiln_strv *wordsv)
{
	struct words wds = {.out = wordsv};
	struct words *w = wordsv ? &wds : NULL;
	bool saved_raw = lx->raw_escapes;
	lx->raw_escapes = raw;
	int rc = -1;
	size_t st, cw;
	struct kiln_buf tmp = {0};

	while (peek(lx) != LEX_EOF) {
		int32_t r = peek(lx);
		if (stop != LEX_EOF && r == stop) {
			next_c(lx, &st, &cw);
			rc = 0;
			goto done;
		}
		if (r == '$' || (!lx->skip_quotes && (r == '\'' || r == '"'))) {
			tmp.len = 0;
			kiln_buf_puts(&tmp, "");
			int k;
			if (r == '$')
				k = process_dollar(lx, &tmp);
			else if (r == '\'')
				k = process_single_quote(lx, &tmp);
			else
				k = process_double_quote(lx, &tmp);
			if (k < 0)
				goto done;
			kiln_buf_append(result, tmp.data, tmp.len);
			if (r == '$')
				words_add_string(w, tmp.data, tmp.len);
			else
				words_add_raw(w, tmp.data, tmp.len);
			continue;
		}
		r = next_c(lx, &st, &cw);
		if (r == (unsigned char)lx->escape) {
			if (lx->raw_escapes) {
				words_add_raw(w, lx->s + st, cw);
				kiln_buf_append(result, lx->s + st, cw);
			}
			r = next_c(lx, &st, &cw);
			if (r == LEX_EOF)
				break;
			words_add_raw(w, lx->s + st, cw);
		} else {
			words_add_char(w, lx->s + st, cw, r);
		}
		kiln_buf_append(result, lx->s + st, cw);
	}
	if (stop != LEX_EOF) {
		char c = (char)stop;
		lex_fail(lx, "unexpected end of statement while looking for matching %c", c);
		goto done;
	}
	rc = 0;
done:
	if (rc == 0 && w)
		words_push(w);
	kiln_buf_free(&wds.word);
	kiln_buf_free(&tmp);
	lx->raw_escapes = saved_raw;
	return rc;
}

/* Quote like Go's %q, enough for messages. */
static void quote_go(struct kiln_buf *b, const char *s)
{
	kiln_buf_putc(b, '"');
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		switch (*p) {
		case '"': kiln_buf_puts(b, "\\\""); break;
		case '\\': kiln_buf_puts(b, "\\\\"); break;
		case '\n': kiln_buf_puts(b, "\\n"); break;
		case '\t': kiln_buf_puts(b, "\\t"); break;
		case '\r': kiln_buf_puts(b, "\\r"); break;
		default:
			if (*p < 0x20 || *p == 0x7f)
				kiln_buf_printf(b, "\\x%02x", *p);
			else
				kiln_buf_putc(b, (char)*p);
		}
	}
	kiln_buf_putc(b, '"');
}

int kiln_expand(const char *text, const struct kiln_env *env, const struct kiln_expand_opts *opts,
		char **word, struct kiln_strv *words, struct kiln_err *err)
{
	struct lex lx = {
		.s = text ? text : "",
		.len = text ? strlen(text) : 0,
		.escape = (opts && opts->escape) ? opts->escape : '\\',
		.skip_unset = opts && opts->skip_unset,
		.skip_quotes = opts && opts->skip_quotes,
		.env = env,
		.refs = opts ? opts->refs : NULL,
	};
	struct kiln_buf result = {0};
	kiln_buf_puts(&result, "");
	struct kiln_strv tmpwords = {0};
	if (process_stop_on(&lx, LEX_EOF, false, &result, &tmpwords) < 0) {
		struct kiln_buf q = {0};
		quote_go(&q, lx.s);
		kiln_err_set(err, 0, "failed to process %s: %s", q.data, lx.msg);
		kiln_buf_free(&q);
		kiln_buf_free(&result);
		kiln_strv_free(&tmpwords);
		return -1;
	}
	if (word)
		*word = kiln_buf_steal(&result);
	else
		kiln_buf_free(&result);
	if (words)
		for (size_t i = 0; i < tmpwords.n; i++)
			kiln_strv_push_owned(words, tmpwords.v[i]), tmpwords.v[i] = NULL;
	kiln_strv_free(&tmpwords);
	return 0;
}

int kiln_expand_word(const char *word, const struct kiln_env *env, char escape, char **out,
		     struct kiln_err *err)
{
	struct kiln_expand_opts o = {.escape = escape};
	return kiln_expand(word, env, &o, out, NULL, err);
}

int kiln_expand_words(const char *text, const struct kiln_env *env, char escape,
		      struct kiln_strv *out, struct kiln_err *err)
{
	struct kiln_expand_opts o = {.escape = escape};
	return kiln_expand(text, env, &o, NULL, out, err);
}

int kiln_expand_refs(const char *word, char escape, struct kiln_strv *names, struct kiln_err *err)
{
	struct kiln_expand_opts o = {.escape = escape, .refs = names, .skip_unset = true};
	char *tmp = NULL;
	int r = kiln_expand(word, NULL, &o, &tmp, NULL, err);
	free(tmp);
	return r;
}
