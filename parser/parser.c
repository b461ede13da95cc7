/* kiln — the Dockerfile parser: lines, directives, continuations, heredocs and
 * the per-instruction argument cutting, following BuildKit's parser rules
 * (frontend/dockerfile/parser).  Written from the behaviour, not the code. */
#include "parser/parser.h"
#include "parser/parser_int.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

/* ---- Go-compatible UTF-8 and whitespace helpers ------------------------ */

size_t kiln_go_decode(const char *s, size_t n, uint32_t *r)
{
	const unsigned char *p = (const unsigned char *)s;
	if (n == 0) {
		*r = KILN_RUNE_ERROR;
		return 0;
	}
	unsigned b0 = p[0];
	if (b0 < 0x80) {
		*r = b0;
		return 1;
	}
	unsigned lo = 0x80, hi = 0xBF;
	size_t need;
	uint32_t v;
	if (b0 >= 0xC2 && b0 <= 0xDF) {
		need = 2;
		v = b0 & 0x1F;
	} else if (b0 >= 0xE0 && b0 <= 0xEF) {
		need = 3;
		v = b0 & 0x0F;
		if (b0 == 0xE0)
			lo = 0xA0;
		else if (b0 == 0xED)
			hi = 0x9F;
	} else if (b0 >= 0xF0 && b0 <= 0xF4) {
		need = 4;
		v = b0 & 0x07;
		if (b0 == 0xF0)
			lo = 0x90;
		else if (b0 == 0xF4)
			hi = 0x8F;
	} else {
		*r = KILN_RUNE_ERROR;
		return 1;
	}
	if (n < need || p[1] < lo || p[1] > hi) {
		*r = KILN_RUNE_ERROR;
		return 1;
	}
	v = (v << 6) | (p[1] & 0x3F);
	for (size_t i = 2; i < need; i++) {
		if (p[i] < 0x80 || p[i] > 0xBF) {
			*r = KILN_RUNE_ERROR;
			return 1;
		}
		v = (v << 6) | (p[i] & 0x3F);
	}
	*r = v;
	return need;
}

static size_t go_decode_last(const char *s, size_t n, uint32_t *r)
{
	const unsigned char *p = (const unsigned char *)s;
	if (n == 0) {
		*r = KILN_RUNE_ERROR;
		return 0;
	}
	if (p[n - 1] < 0x80) {
		*r = p[n - 1];
		return 1;
	}
	ptrdiff_t end = (ptrdiff_t)n, lim = end - 4, start = end - 1;
	if (lim < 0)
		lim = 0;
	for (start--; start >= lim; start--)
		if ((p[start] & 0xC0) != 0x80)
			break;
	if (start < 0)
		start = 0;
	size_t w = kiln_go_decode(s + start, (size_t)(end - start), r);
	if (start + (ptrdiff_t)w != end) {
		*r = KILN_RUNE_ERROR;
		return 1;
	}
	return w;
}

bool kiln_go_is_space(uint32_t r)
{
	switch (r) {
	case '\t': case '\n': case '\v': case '\f': case '\r': case ' ': case 0x85: case 0xA0:
	case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
		return true;
	}
	return r >= 0x2000 && r <= 0x200A;
}

void kiln_go_put_rune(struct kiln_buf *b, uint32_t r)
{
	char t[4];
	if (r < 0x80) {
		kiln_buf_putc(b, (char)r);
		return;
	}
	if (r > 0x10FFFF || (r >= 0xD800 && r <= 0xDFFF))
		r = KILN_RUNE_ERROR;
	if (r < 0x800) {
		t[0] = (char)(0xC0 | (r >> 6));
		t[1] = (char)(0x80 | (r & 0x3F));
		kiln_buf_append(b, t, 2);
	} else if (r < 0x10000) {
		t[0] = (char)(0xE0 | (r >> 12));
		t[1] = (char)(0x80 | ((r >> 6) & 0x3F));
		t[2] = (char)(0x80 | (r & 0x3F));
		kiln_buf_append(b, t, 3);
	} else {
		t[0] = (char)(0xF0 | (r >> 18));
		t[1] = (char)(0x80 | ((r >> 12) & 0x3F));
		t[2] = (char)(0x80 | ((r >> 6) & 0x3F));
		t[3] = (char)(0x80 | (r & 0x3F));
		kiln_buf_append(b, t, 4);
	}
}

/* strings.TrimLeftFunc(s, unicode.IsSpace) */
static void trim_left_space(const char **s, size_t *n)
{
	while (*n > 0) {
		uint32_t r;
		size_t w = kiln_go_decode(*s, *n, &r);
		if (!kiln_go_is_space(r) || (w == 1 && r == KILN_RUNE_ERROR))
			break;
		*s += w;
		*n -= w;
	}
}

static void trim_right_space(const char *s, size_t *n)
{
	while (*n > 0) {
		uint32_t r;
		size_t w = go_decode_last(s, *n, &r);
		if (!kiln_go_is_space(r) || (w == 1 && r == KILN_RUNE_ERROR))
			break;
		*n -= w;
	}
}

/* strings.TrimSpace */
void kiln_go_trim_space(const char **s, size_t *n)
{
	trim_left_space(s, n);
	trim_right_space(*s, n);
}

/* [\t\v\f\r ] — the blanks BuildKit splits instruction lines on. */
static bool is_split_ws(char c)
{
	return c == '\t' || c == '\v' || c == '\f' || c == '\r' || c == ' ';
}

/* unicode.IsSpace(rune(byte)) — the byte-wise test some BuildKit loops use. */
static bool is_space_byte(unsigned char c)
{
	return kiln_go_is_space(c);
}

/* kiln_buf_steal, always NUL-terminated (also when nothing was appended). */
static char *buf_take(struct kiln_buf *b)
{
	kiln_buf_append(b, "", 0);
	return kiln_buf_steal(b);
}

static char *xmemdup(const char *s, size_t n)
{
	return kiln_xstrndup(s, n);
}

/* unicode.ToLower for the common alphabets (Latin, Greek, Cyrillic, Armenian,
 * fullwidth); other runes are returned unchanged. */
static uint32_t go_to_lower(uint32_t r)
{
	if (r < 0x80)
		return (r >= 'A' && r <= 'Z') ? r + 32 : r;
	if ((r >= 0xC0 && r <= 0xDE && r != 0xD7) || (r >= 0x391 && r <= 0x3AB && r != 0x3A2) ||
	    (r >= 0x410 && r <= 0x42F) || (r >= 0xFF21 && r <= 0xFF3A))
		return r + 32;
	if (r >= 0x400 && r <= 0x40F)
		return r + 80;
	if (r >= 0x531 && r <= 0x556)
		return r + 48;
	if (r == 0x130)
		return 'i';
	if ((r >= 0x100 && r <= 0x137) || (r >= 0x14A && r <= 0x177) || (r >= 0x460 && r <= 0x481) ||
	    (r >= 0x48A && r <= 0x4BF) || (r >= 0x4D0 && r <= 0x52F) || (r >= 0x1E00 && r <= 0x1E95) ||
	    (r >= 0x1EA0 && r <= 0x1EFF))
		return (r % 2 == 0) ? r + 1 : r;
	if ((r >= 0x139 && r <= 0x148) || (r >= 0x179 && r <= 0x17E))
		return (r % 2 == 1) ? r + 1 : r;
	if (r == 0x178)
		return 0xFF;
	return r;
}

/* strings.ToLower; invalid UTF-8 becomes U+FFFD. */
char *kiln_go_lower(const char *s, size_t n)
{
	struct kiln_buf b = {0};
	size_t i = 0;
	while (i < n) {
		uint32_t r;
		size_t w = kiln_go_decode(s + i, n - i, &r);
		if (r < 0x80)
			kiln_buf_putc(&b, (char)go_to_lower(r));
		else if (w == 1 && r == KILN_RUNE_ERROR)
			kiln_go_put_rune(&b, KILN_RUNE_ERROR);
		else
			kiln_go_put_rune(&b, go_to_lower(r));
		i += w;
	}
	return buf_take(&b);
}

/* ---- parse state ------------------------------------------------------ */

struct pstate {
	const char *filename;
	char escape;
	bool directives_done;
	bool seen_escape, seen_syntax, seen_check;
	struct kiln_df *df;
};

static int perr(struct pstate *ps, int line, struct kiln_err *err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int perr(struct pstate *ps, int line, struct kiln_err *err, const char *fmt, ...)
{
	char msg[KILN_ERR_MSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (line > 0)
		return kiln_err_set(err, 0, "%s:%d: %s", ps->filename, line, msg);
	return kiln_err_set(err, 0, "%s: %s", ps->filename, msg);
}

/* ---- lines ------------------------------------------------------------ */

struct scan {
	const char *p;
	size_t len, pos;
};

/* bufio.Scanner with a split function that keeps the '\n'. */
static bool scan_line(struct scan *s, const char **line, size_t *n)
{
	if (s->pos >= s->len)
		return false;
	const char *start = s->p + s->pos;
	const char *nl = memchr(start, '\n', s->len - s->pos);
	size_t k = nl ? (size_t)(nl - start) + 1 : s->len - s->pos;
	*line = start;
	*n = k;
	s->pos += k;
	return true;
}

/* bytes.TrimRight(s, "\r\n") */
static void trim_newline(const char *s, size_t *n)
{
	while (*n > 0 && (s[*n - 1] == '\r' || s[*n - 1] == '\n'))
		(*n)--;
}

static bool is_comment(const char *s, size_t n)
{
	trim_left_space(&s, &n);
	return n > 0 && s[0] == '#';
}

static bool is_empty_continuation(const char *s, size_t n)
{
	trim_newline(s, &n);
	trim_left_space(&s, &n);
	return n == 0;
}

/* The continuation rule: the escape character as the last non-[ \t] character
 * continues the line, unless it is itself preceded by the escape character.
 * Returns true at the end of the logical line (no continuation). */
static bool trim_continuation(const char *s, size_t *n, char esc)
{
	size_t e = *n;
	while (e > 0 && (s[e - 1] == ' ' || s[e - 1] == '\t'))
		e--;
	if (e == 0 || s[e - 1] != esc)
		return true;
	if (e == 1) {
		*n = 0;
		return false;
	}
	if (s[e - 2] == esc)
		return true;
	*n = e - 1;
	return false;
}

static bool is_re_space(char c) /* Go regexp \s */
{
	return c == '\t' || c == '\n' || c == '\f' || c == '\r' || c == ' ';
}

/* Match ^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$ */
static bool match_directive(const char *s, size_t n, const char **key, size_t *klen,
			    const char **val, size_t *vlen)
{
	size_t i = 0;
	if (n == 0 || s[0] != '#')
		return false;
	i = 1;
	while (i < n && is_re_space(s[i]))
		i++;
	if (i >= n || !isalpha((unsigned char)s[i]))
		return false;
	size_t ks = i;
	while (i < n && isalnum((unsigned char)s[i]))
		i++;
	*key = s + ks;
	*klen = i - ks;
	while (i < n && is_re_space(s[i]))
		i++;
	if (i >= n || s[i] != '=')
		return false;
	i++;
	size_t ws = i;
	while (i < n && is_re_space(s[i]))
		i++;
	if (i >= n) {
		/* Only blanks after '=': the lazy group takes the last one. */
		if (n == ws || s[n - 1] == '\n')
			return false;
		*val = s + n - 1;
		*vlen = 1;
		return true;
	}
	size_t e = n;
	while (e > i && is_re_space(s[e - 1]))
		e--;
	/* '.' does not match '\n' */
	if (memchr(s + i, '\n', e - i))
		return false;
	*val = s + i;
	*vlen = e - i;
	return true;
}

/* Returns 1 when the line was a directive, 0 when not, -1 on error. */
static int possible_directive(struct pstate *ps, const char *s, size_t n, int line, struct kiln_err *err)
{
	if (ps->directives_done)
		return 0;
	const char *k, *v;
	size_t kl, vl;
	if (!match_directive(s, n, &k, &kl, &v, &vl)) {
		ps->directives_done = true;
		return 0;
	}
	char key[16];
	if (kl >= sizeof(key)) {
		ps->directives_done = true;
		return 0;
	}
	for (size_t i = 0; i < kl; i++)
		key[i] = (char)tolower((unsigned char)k[i]);
	key[kl] = '\0';
	bool *seen;
	char **slot = NULL;
	int *lineslot;
	if (!strcmp(key, "escape")) {
		seen = &ps->seen_escape;
		lineslot = &ps->df->escape_line;
	} else if (!strcmp(key, "syntax")) {
		seen = &ps->seen_syntax;
		slot = &ps->df->syntax;
		lineslot = &ps->df->syntax_line;
	} else if (!strcmp(key, "check")) {
		seen = &ps->seen_check;
		slot = &ps->df->check;
		lineslot = &ps->df->check_line;
	} else {
		ps->directives_done = true;
		return 0;
	}
	if (*seen)
		return perr(ps, line, err, "only one %s parser directive can be used (remove the repeated '# %s=' line)",
			    key, key);
	*seen = true;
	*lineslot = line;
	if (slot) {
		*slot = xmemdup(v, vl);
		return 1;
	}
	if (vl != 1 || (v[0] != '\\' && v[0] != '`')) {
		char *bad = xmemdup(v, vl);
		perr(ps, line, err, "invalid escape token '%s' does not match ` or \\ (use '# escape=\\' or '# escape=`')",
		     bad);
		free(bad);
		return -1;
	}
	ps->escape = v[0];
	ps->df->escape = v[0];
	return 1;
}

/* ---- flags ------------------------------------------------------------ */

/* BuildKit's extractBuilderFlags: "--x=y" words at the front of the
 * arguments, quotes removed, '\\' escapes, a lone "--" ends them.  Works on
 * bytes (non-ASCII bytes are widened to runes as Go's rune(byte) does). */
static void extract_flags(const char *line, size_t n, struct kiln_strv *flags, const char **rest,
			  size_t *rest_len)
{
	enum { IN_SPACES, IN_WORD, IN_QUOTE } phase = IN_SPACES;
	struct kiln_buf word = {0};
	bool blank_ok = false;
	unsigned char quote = 0, ch = 0;
	*rest = line + n;
	*rest_len = 0;
	for (size_t pos = 0; pos <= n; pos++) {
		if (pos != n)
			ch = (unsigned char)line[pos];
		if (phase == IN_SPACES) {
			if (pos == n)
				break;
			if (is_space_byte(ch))
				continue;
			if (ch != '-' || pos + 1 == n || line[pos + 1] != '-') {
				*rest = line + pos;
				*rest_len = n - pos;
				goto out;
			}
			phase = IN_WORD;
		}
		if ((phase == IN_WORD || phase == IN_QUOTE) && pos == n) {
			bool dashdash = word.len == 2 && !memcmp(word.data, "--", 2);
			if (!dashdash && (blank_ok || word.len > 0))
				kiln_strv_push(flags, word.data ? word.data : "");
			break;
		}
		if (phase == IN_WORD) {
			if (is_space_byte(ch)) {
				phase = IN_SPACES;
				if (word.len == 2 && !memcmp(word.data, "--", 2)) {
					*rest = line + pos;
					*rest_len = n - pos;
					goto out;
				}
				if (blank_ok || word.len > 0)
					kiln_strv_push(flags, word.data ? word.data : "");
				word.len = 0;
				if (word.data)
					word.data[0] = '\0';
				blank_ok = false;
				continue;
			}
			if (ch == '\'' || ch == '"') {
				quote = ch;
				blank_ok = true;
				phase = IN_QUOTE;
				continue;
			}
			if (ch == '\\') {
				if (pos + 1 == n)
					continue;
				pos++;
				ch = (unsigned char)line[pos];
			}
			kiln_go_put_rune(&word, ch);
			continue;
		}
		/* IN_QUOTE */
		if (ch == quote) {
			phase = IN_WORD;
			continue;
		}
		if (ch == '\\') {
			if (pos + 1 == n) {
				phase = IN_WORD;
				continue;
			}
			pos++;
			ch = (unsigned char)line[pos];
		}
		kiln_go_put_rune(&word, ch);
	}
out:
	kiln_buf_free(&word);
}

/* ---- words (ARG, ENV, LABEL) ------------------------------------------ */

/* BuildKit's parseWords: split on unquoted blanks, quotes and escapes kept. */
static void parse_words(const char *s, size_t n, char esc, struct kiln_strv *out)
{
	enum { IN_SPACES, IN_WORD, IN_QUOTE } phase = IN_SPACES;
	struct kiln_buf word = {0};
	bool blank_ok = false;
	uint32_t quote = 0, ch = 0;
	size_t w = 0;
	for (size_t pos = 0; pos <= n; pos += w) {
		if (pos != n)
			w = kiln_go_decode(s + pos, n - pos, &ch);
		if (phase == IN_SPACES) {
			if (pos == n)
				break;
			if (kiln_go_is_space(ch))
				continue;
			phase = IN_WORD;
		}
		if ((phase == IN_WORD || phase == IN_QUOTE) && pos == n) {
			if (blank_ok || word.len > 0)
				kiln_strv_push(out, word.data ? word.data : "");
			break;
		}
		if (phase == IN_WORD) {
			if (kiln_go_is_space(ch)) {
				phase = IN_SPACES;
				if (blank_ok || word.len > 0)
					kiln_strv_push(out, word.data ? word.data : "");
				word.len = 0;
				if (word.data)
					word.data[0] = '\0';
				blank_ok = false;
				continue;
			}
			if (ch == '\'' || ch == '"') {
				quote = ch;
				blank_ok = true;
				phase = IN_QUOTE;
			}
			if (ch == (unsigned char)esc) {
				if (pos + w == n)
					continue;
				kiln_go_put_rune(&word, ch);
				pos += w;
				w = kiln_go_decode(s + pos, n - pos, &ch);
			}
			kiln_go_put_rune(&word, ch);
			continue;
		}
		/* IN_QUOTE */
		if (ch == quote)
			phase = IN_WORD;
		if (ch == (unsigned char)esc && quote != '\'') {
			if (pos + w == n) {
				phase = IN_WORD;
				continue;
			}
			pos += w;
			kiln_go_put_rune(&word, ch);
			w = kiln_go_decode(s + pos, n - pos, &ch);
		}
		kiln_go_put_rune(&word, ch);
	}
	kiln_buf_free(&word);
}

/* regexp [\t\v\f\r ]+ Split(s, max) (max = -1 for all) */
static void split_ws(const char *s, size_t n, int max, struct kiln_strv *out)
{
	size_t start = 0, i = 0;
	int pieces = 1;
	while (i < n) {
		if (max > 0 && pieces >= max)
			break;
		if (is_split_ws(s[i])) {
			size_t j = i;
			while (j < n && is_split_ws(s[j]))
				j++;
			kiln_strv_push_owned(out, xmemdup(s + start, i - start));
			pieces++;
			start = i = j;
			continue;
		}
		i++;
	}
	kiln_strv_push_owned(out, xmemdup(s + start, n - start));
}

/* ---- JSON (exec form) ------------------------------------------------- */

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static long get_u4(const char *s, size_t n)
{
	if (n < 6 || s[0] != '\\' || s[1] != 'u')
		return -1;
	long v = 0;
	for (int i = 2; i < 6; i++) {
		int h = hexval(s[i]);
		if (h < 0)
			return -1;
		v = v * 16 + h;
	}
	return v;
}

/* Make the text what Go's decoder would accept the way jansson needs it:
 * invalid UTF-8 becomes U+FFFD, a lone surrogate escape becomes \ufffd. */
static void json_normalize(const char *s, size_t n, struct kiln_buf *out)
{
	bool in_str = false;
	size_t i = 0;
	while (i < n) {
		uint32_t r;
		size_t w = kiln_go_decode(s + i, n - i, &r);
		if (w == 1 && r == KILN_RUNE_ERROR) {
			kiln_go_put_rune(out, KILN_RUNE_ERROR);
			i++;
			continue;
		}
		char c = s[i];
		if (!in_str) {
			if (c == '"')
				in_str = true;
			kiln_buf_append(out, s + i, w);
			i += w;
			continue;
		}
		if (c == '"') {
			in_str = false;
			kiln_buf_putc(out, c);
			i++;
			continue;
		}
		if (c == '\\' && i + 1 < n) {
			long u = get_u4(s + i, n - i);
			if (u >= 0xD800 && u < 0xE000) {
				long u2 = get_u4(s + i + 6, n - i - 6);
				if (u < 0xDC00 && u2 >= 0xDC00 && u2 < 0xE000) {
					kiln_buf_append(out, s + i, 12);
					i += 12;
				} else {
					kiln_buf_puts(out, "\\ufffd");
					i += 6;
				}
				continue;
			}
			kiln_buf_append(out, s + i, 2);
			i += 2;
			continue;
		}
		kiln_buf_append(out, s + i, w);
		i += w;
	}
}

/* 1 = not a JSON array (use the shell form), 0 = parsed, -1 = error. */
static int parse_json(const char *s, size_t n, struct kiln_strv *out)
{
	trim_left_space(&s, &n);
	if (n == 0 || s[0] != '[')
		return 1;
	struct kiln_buf norm = {0};
	json_normalize(s, n, &norm);
	json_error_t jerr;
	/* The whole rest must be one JSON value (BuildKit uses json.Unmarshal
	 * since moby/buildkit#5107: data after the array means shell form). */
	json_t *v = json_loadb(norm.data, norm.len, JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL, &jerr);
	kiln_buf_free(&norm);
	if (!v)
		return 1;
	if (!json_is_array(v)) {
		json_decref(v);
		return 1;
	}
	size_t k;
	json_t *e;
	json_array_foreach(v, k, e) {
		if (!json_is_string(e)) {
			json_decref(v);
			return -1;
		}
	}
	json_array_foreach(v, k, e) {
		/* A NUL ("\u0000") cannot live in a C string: it is kept as the
		 * two bytes C0 80, which decoded JSON cannot otherwise contain
		 * (invalid UTF-8 was replaced above). */
		const char *str = json_string_value(e);
		size_t sl = json_string_length(e);
		if (!memchr(str, '\0', sl)) {
			kiln_strv_push(out, str);
			continue;
		}
		struct kiln_buf b = {0};
		for (size_t i = 0; i < sl; i++) {
			if (str[i])
				kiln_buf_putc(&b, str[i]);
			else
				kiln_buf_append(&b, "\xC0\x80", 2);
		}
		kiln_strv_push_owned(out, buf_take(&b));
	}
	json_decref(v);
	return 0;
}

#define ERR_NOT_STRING_ARRAY \
	"when using JSON array syntax, arrays must be comprised of strings only (quote every element, e.g. [\"echo\", \"1\"])"

/* parseMaybeJSON: JSON array of strings, else the raw text. */
static int parse_maybe_json(struct kiln_df_node *node, const char *s, size_t n, struct kiln_err *err)
{
	if (n == 0)
		return 0;
	int rc = parse_json(s, n, &node->args);
	if (rc < 0)
		return kiln_err_set(err, 0, ERR_NOT_STRING_ARRAY);
	if (rc == 0) {
		node->json = true;
		return 0;
	}
	kiln_strv_push_owned(&node->args, xmemdup(s, n));
	return 0;
}

/* parseMaybeJSONToList: JSON array of strings, else split on blanks. */
static int parse_maybe_json_list(struct kiln_df_node *node, const char *s, size_t n, struct kiln_err *err)
{
	int rc = parse_json(s, n, &node->args);
	if (rc < 0)
		return kiln_err_set(err, 0, ERR_NOT_STRING_ARRAY);
	if (rc == 0) {
		node->json = true;
		return 0;
	}
	if (n > 0)
		split_ws(s, n, -1, &node->args);
	return 0;
}

static void go_quote_to(struct kiln_buf *b, const char *s)
{
	kiln_df_quote(s, b);
}

/* parseNameVal: ENV and LABEL. */
static int parse_name_val(struct kiln_df_node *node, const char *s, size_t n, char esc, const char *key,
			  struct kiln_err *err)
{
	struct kiln_strv words = {0};
	parse_words(s, n, esc, &words);
	if (words.n == 0)
		return 0;
	if (!strchr(words.v[0], '=')) {
		struct kiln_strv parts = {0};
		split_ws(s, n, 2, &parts);
		kiln_strv_free(&words);
		if (parts.n < 2) {
			kiln_strv_free(&parts);
			return kiln_err_set(err, 0, "%s must have two arguments (write %s NAME=VALUE)", key, key);
		}
		kiln_strv_push(&node->args, parts.v[0]);
		kiln_strv_push(&node->args, parts.v[1]);
		kiln_strv_push(&node->args, "");
		kiln_strv_free(&parts);
		return 0;
	}
	for (size_t i = 0; i < words.n; i++) {
		char *eq = strchr(words.v[i], '=');
		if (!eq) {
			struct kiln_buf q = {0};
			go_quote_to(&q, words.v[i]);
			kiln_err_set(err, 0, "Syntax error - can't find = in %s. Must be of the form: name=value",
				     q.data);
			kiln_buf_free(&q);
			kiln_strv_free(&words);
			return -1;
		}
		kiln_strv_push_owned(&node->args, xmemdup(words.v[i], (size_t)(eq - words.v[i])));
		kiln_strv_push(&node->args, eq + 1);
		kiln_strv_push(&node->args, "=");
	}
	kiln_strv_free(&words);
	return 0;
}

/* parseHealthConfig: the type word, then the command as for CMD. */
static int parse_health(struct kiln_df_node *node, const char *s, size_t n, struct kiln_err *err)
{
	size_t sep = 0;
	while (sep < n && !is_space_byte((unsigned char)s[sep]))
		sep++;
	size_t next = sep;
	while (next < n && is_space_byte((unsigned char)s[next]))
		next++;
	if (sep == 0)
		return 0;
	kiln_strv_push_owned(&node->args, xmemdup(s, sep));
	return parse_maybe_json(node, s + next, n - next, err);
}

enum instr_kind {
	K_UNKNOWN, K_MAYBE_JSON, K_MAYBE_JSON_LIST, K_WS, K_STRING, K_ARG, K_ENV, K_LABEL, K_HEALTH, K_ONBUILD
};

static enum instr_kind kind_of(const char *lower)
{
	static const struct {
		const char *name;
		enum instr_kind kind;
	} table[] = {
		{"add", K_MAYBE_JSON_LIST}, {"arg", K_ARG}, {"cmd", K_MAYBE_JSON},
		{"copy", K_MAYBE_JSON_LIST}, {"entrypoint", K_MAYBE_JSON}, {"env", K_ENV},
		{"expose", K_WS}, {"from", K_WS}, {"healthcheck", K_HEALTH}, {"label", K_LABEL},
		{"maintainer", K_STRING}, {"onbuild", K_ONBUILD}, {"run", K_MAYBE_JSON},
		{"shell", K_MAYBE_JSON}, {"stopsignal", K_STRING}, {"user", K_STRING},
		{"volume", K_MAYBE_JSON_LIST}, {"workdir", K_STRING},
	};
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
		if (!strcmp(table[i].name, lower))
			return table[i].kind;
	return K_UNKNOWN;
}

bool kiln_df_known_instruction(const char *instr_lower)
{
	return instr_lower && kind_of(instr_lower) != K_UNKNOWN;
}

static void node_clear(struct kiln_df_node *n);

/* newNodeFromLine: split off the instruction word and the flags, then cut
 * the arguments the way the instruction wants them. */
static int node_from_line(struct pstate *ps, const char *line, size_t n, struct kiln_df_node *node,
			  struct kiln_err *err)
{
	memset(node, 0, sizeof(*node));
	node->original = xmemdup(line, n);
	const char *t = line;
	size_t tn = n;
	kiln_go_trim_space(&t, &tn);
	size_t cl = 0;
	while (cl < tn && !is_split_ws(t[cl]))
		cl++;
	node->instr = xmemdup(t, cl);
	node->instr_lower = kiln_go_lower(t, cl);
	const char *after = t + cl;
	size_t an = tn - cl;
	while (an > 0 && is_split_ws(*after)) {
		after++;
		an--;
	}
	node->rest = xmemdup(after, an);
	const char *args = "";
	size_t argn = 0;
	if (cl < tn)
		extract_flags(after, an, &node->flags, &args, &argn);
	kiln_go_trim_space(&args, &argn);

	switch (kind_of(node->instr_lower)) {
	case K_UNKNOWN:
		kiln_strv_push(&node->args, "");
		return 0;
	case K_MAYBE_JSON:
		return parse_maybe_json(node, args, argn, err);
	case K_MAYBE_JSON_LIST:
		return parse_maybe_json_list(node, args, argn, err);
	case K_WS:
		if (argn > 0)
			split_ws(args, argn, -1, &node->args);
		return 0;
	case K_STRING:
		if (argn > 0)
			kiln_strv_push_owned(&node->args, xmemdup(args, argn));
		return 0;
	case K_ARG:
		parse_words(args, argn, ps->escape, &node->args);
		return 0;
	case K_ENV:
		return parse_name_val(node, args, argn, ps->escape, "ENV", err);
	case K_LABEL:
		return parse_name_val(node, args, argn, ps->escape, "LABEL", err);
	case K_HEALTH:
		return parse_health(node, args, argn, err);
	case K_ONBUILD:
		if (argn == 0)
			return 0;
		node->onbuild = kiln_xcalloc(1, sizeof(*node->onbuild));
		if (node_from_line(ps, args, argn, node->onbuild, err) < 0)
			return -1;
		return 0;
	}
	return 0;
}

/* ---- heredocs --------------------------------------------------------- */

/* A small model of BuildKit's shell lexer, enough to find heredoc words the
 * way it does: every variable is unset and left as written, the escape
 * character is '\\'. */
struct shlex {
	const char *s;
	size_t n, pos;
	bool raw_quotes;
	bool raw_escapes;
	struct kiln_buf wbuf; /* shared by nested word collections, as in BuildKit */
	struct kiln_err *err;
	int depth;            /* ${...} nesting, bounded to keep the C stack safe */
};

#define SH_MAX_DEPTH 512

#define SH_EOF ((int32_t)-1)

static int32_t sh_peek(struct shlex *l)
{
	if (l->pos >= l->n)
		return SH_EOF;
	uint32_t r;
	kiln_go_decode(l->s + l->pos, l->n - l->pos, &r);
	return (int32_t)r;
}

static int32_t sh_next(struct shlex *l)
{
	if (l->pos >= l->n)
		return SH_EOF;
	uint32_t r;
	l->pos += kiln_go_decode(l->s + l->pos, l->n - l->pos, &r);
	return (int32_t)r;
}

struct shwords {
	struct kiln_buf *buf;
	struct kiln_strv words;
	bool in_word;
};

static void shw_raw_char(struct shwords *w, int32_t ch)
{
	kiln_go_put_rune(w->buf, (uint32_t)ch);
	w->in_word = true;
}

static void shw_char(struct shwords *w, int32_t ch)
{
	bool sp = kiln_go_is_space((uint32_t)ch);
	if (sp && w->in_word) {
		if (w->buf->len != 0) {
			kiln_strv_push(&w->words, w->buf->data);
			w->buf->len = 0;
			w->buf->data[0] = '\0';
			w->in_word = false;
		}
	} else if (!sp) {
		shw_raw_char(w, ch);
	}
}

static void shw_string(struct shwords *w, const char *s)
{
	size_t n = strlen(s), i = 0;
	while (i < n) {
		uint32_t r;
		i += kiln_go_decode(s + i, n - i, &r);
		shw_char(w, (int32_t)r);
	}
}

static void shw_raw_string(struct shwords *w, const char *s)
{
	kiln_buf_puts(w->buf, s);
	w->in_word = true;
}

static void shw_finish(struct shwords *w)
{
	if (w->buf->len > 0) {
		kiln_strv_push(&w->words, w->buf->data);
		w->buf->len = 0;
		w->buf->data[0] = '\0';
		w->in_word = false;
	}
}

static int sh_dollar(struct shlex *l, struct kiln_buf *out);
static int sh_stop_on(struct shlex *l, int32_t stop, bool raw_escapes, struct kiln_buf *result,
		      struct kiln_strv *words);

static int sh_fail(struct shlex *l, const char *msg)
{
	return kiln_err_set(l->err, 0, "%s", msg);
}

static int sh_single(struct shlex *l, struct kiln_buf *out)
{
	int32_t ch = sh_next(l);
	if (l->raw_quotes)
		kiln_go_put_rune(out, (uint32_t)ch);
	for (;;) {
		ch = sh_next(l);
		if (ch == SH_EOF)
			return sh_fail(l, "unexpected end of statement while looking for matching single-quote");
		if (ch == '\'') {
			if (l->raw_quotes)
				kiln_go_put_rune(out, (uint32_t)ch);
			return 0;
		}
		kiln_go_put_rune(out, (uint32_t)ch);
	}
}

static int sh_double(struct shlex *l, struct kiln_buf *out)
{
	int32_t ch = sh_next(l);
	if (l->raw_quotes)
		kiln_go_put_rune(out, (uint32_t)ch);
	for (;;) {
		int32_t p = sh_peek(l);
		if (p == SH_EOF)
			return sh_fail(l, "unexpected end of statement while looking for matching double-quote");
		if (p == '"') {
			ch = sh_next(l);
			if (l->raw_quotes)
				kiln_go_put_rune(out, (uint32_t)ch);
			return 0;
		}
		if (p == '$') {
			struct kiln_buf v = {0};
			if (sh_dollar(l, &v) < 0) {
				kiln_buf_free(&v);
				return -1;
			}
			if (v.data)
				kiln_buf_puts(out, v.data);
			kiln_buf_free(&v);
			continue;
		}
		ch = sh_next(l);
		if (ch == '\\') {
			if (l->raw_escapes)
				kiln_go_put_rune(out, (uint32_t)ch);
			int32_t q = sh_peek(l);
			if (q == SH_EOF)
				continue;
			if (q == '"' || q == '$' || q == '\\')
				ch = sh_next(l);
		}
		kiln_go_put_rune(out, (uint32_t)ch);
	}
}

static bool sh_is_letter(int32_t ch)
{
	if (ch < 0)
		return false;
	if (ch < 0x80)
		return isalpha(ch);
	return !kiln_go_is_space((uint32_t)ch) && ch != (int32_t)KILN_RUNE_ERROR;
}

static bool sh_is_digit(int32_t ch)
{
	return ch >= '0' && ch <= '9';
}

static void sh_name(struct shlex *l, struct kiln_buf *name)
{
	while (sh_peek(l) != SH_EOF) {
		int32_t ch = sh_peek(l);
		if (name->len == 0 && sh_is_digit(ch)) {
			while (sh_peek(l) != SH_EOF && sh_is_digit(sh_peek(l)))
				kiln_go_put_rune(name, (uint32_t)sh_next(l));
			return;
		}
		if (name->len == 0 && ch > 0 && ch < 0x80 && strchr("@*#?-$!0", ch)) {
			kiln_go_put_rune(name, (uint32_t)sh_next(l));
			return;
		}
		if (!sh_is_letter(ch) && !sh_is_digit(ch) && ch != '_')
			break;
		kiln_go_put_rune(name, (uint32_t)sh_next(l));
	}
}

static void put_ch_str(struct kiln_buf *b, int32_t ch)
{
	kiln_go_put_rune(b, ch < 0 ? KILN_RUNE_ERROR : (uint32_t)ch);
}

static int sh_dollar(struct shlex *l, struct kiln_buf *out)
{
	sh_next(l);
	struct kiln_buf name = {0};
	if (sh_peek(l) != '{') {
		sh_name(l, &name);
		kiln_buf_putc(out, '$');
		if (name.data)
			kiln_buf_puts(out, name.data);
		kiln_buf_free(&name);
		return 0;
	}
	sh_next(l);
	int32_t p = sh_peek(l);
	if (p == SH_EOF)
		return sh_fail(l, "syntax error: missing '}'");
	if (p == '{' || p == '}' || p == ':')
		return sh_fail(l, "syntax error: bad substitution");
	sh_name(l, &name);
	const char *nm = name.data ? name.data : "";
	int32_t ch = sh_next(l);
	struct kiln_buf chs = {0};
	put_ch_str(&chs, ch);
	bool null_is_unset = false;
	int rc = 0;
	switch (ch) {
	case '}':
		kiln_buf_printf(out, "${%s}", nm);
		break;
	case ':':
		null_is_unset = true;
		ch = sh_next(l);
		put_ch_str(&chs, ch);
		/* fall through */
	case '+': case '-': case '?': case '#': case '%': {
		bool raw = ch == '#' || ch == '%';
		if (null_is_unset && raw) {
			rc = sh_fail(l, "unsupported modifier in substitution");
			break;
		}
		struct kiln_buf word = {0};
		if (sh_stop_on(l, '}', raw, &word, NULL) < 0) {
			kiln_buf_free(&word);
			if (sh_peek(l) == SH_EOF)
				sh_fail(l, "syntax error: missing '}'");
			rc = -1;
			break;
		}
		kiln_buf_printf(out, "${%s%s%s}", nm, chs.data, word.data ? word.data : "");
		kiln_buf_free(&word);
		break;
	}
	case '/': {
		if (sh_peek(l) == '/')
			sh_next(l);
		struct kiln_buf pat = {0}, rep = {0};
		if (sh_stop_on(l, '/', true, &pat, NULL) < 0) {
			if (sh_peek(l) == SH_EOF)
				sh_fail(l, "syntax error: missing '/' in ${}");
			rc = -1;
		} else if (sh_stop_on(l, '}', true, &rep, NULL) < 0) {
			if (sh_peek(l) == SH_EOF)
				sh_fail(l, "syntax error: missing '}'");
			rc = -1;
		} else {
			kiln_buf_printf(out, "${%s/%s/%s}", nm, pat.data ? pat.data : "", rep.data ? rep.data : "");
		}
		kiln_buf_free(&pat);
		kiln_buf_free(&rep);
		break;
	}
	default:
		rc = sh_fail(l, "unsupported modifier in substitution");
		break;
	}
	kiln_buf_free(&chs);
	kiln_buf_free(&name);
	return rc;
}

static int sh_stop_on(struct shlex *l, int32_t stop, bool raw_escapes, struct kiln_buf *result,
		      struct kiln_strv *words_out)
{
	if (l->depth >= SH_MAX_DEPTH)
		return sh_fail(l, "variable substitutions nested too deeply");
	l->depth++;
	bool saved = l->raw_escapes;
	l->raw_escapes = raw_escapes;
	l->wbuf.len = 0;
	if (l->wbuf.data)
		l->wbuf.data[0] = '\0';
	struct shwords w = {.buf = &l->wbuf};
	int rc = 0;
	while (sh_peek(l) != SH_EOF) {
		int32_t ch = sh_peek(l);
		if (stop != SH_EOF && ch == stop) {
			sh_next(l);
			goto done;
		}
		if (ch == '$' || ch == '\'' || ch == '"') {
			struct kiln_buf tmp = {0};
			int r = ch == '$' ? sh_dollar(l, &tmp) : ch == '\'' ? sh_single(l, &tmp) : sh_double(l, &tmp);
			if (r < 0) {
				kiln_buf_free(&tmp);
				rc = -1;
				goto out;
			}
			const char *ts = tmp.data ? tmp.data : "";
			kiln_buf_puts(result, ts);
			if (ch == '$')
				shw_string(&w, ts);
			else
				shw_raw_string(&w, ts);
			kiln_buf_free(&tmp);
			continue;
		}
		ch = sh_next(l);
		if (ch == '\\') {
			if (l->raw_escapes) {
				shw_raw_char(&w, ch);
				kiln_go_put_rune(result, (uint32_t)ch);
			}
			ch = sh_next(l);
			if (ch == SH_EOF)
				break;
			shw_raw_char(&w, ch);
		} else {
			shw_char(&w, ch);
		}
		kiln_go_put_rune(result, (uint32_t)ch);
	}
	if (stop != SH_EOF) {
		rc = sh_fail(l, "unexpected end of statement while looking for a matching character");
		goto out;
	}
done:
	shw_finish(&w);
	if (words_out) {
		for (size_t i = 0; i < w.words.n; i++)
			kiln_strv_push(words_out, w.words.v[i]);
	}
out:
	kiln_strv_free(&w.words);
	l->raw_escapes = saved;
	l->depth--;
	return rc;
}

/* ProcessWords(s) with the given options; -1 on a lexing error. */
static int sh_words(const char *s, size_t n, bool raw_quotes, bool raw_escapes, struct kiln_strv *out,
		    struct kiln_err *err)
{
	struct shlex l = {.s = s, .n = n, .raw_quotes = raw_quotes, .raw_escapes = raw_escapes, .err = err};
	struct kiln_buf result = {0};
	int rc = sh_stop_on(&l, SH_EOF, raw_escapes, &result, out);
	kiln_buf_free(&result);
	kiln_buf_free(&l.wbuf);
	return rc;
}

static size_t count_quotes(const char *s)
{
	size_t c = 0;
	for (; *s; s++)
		if (*s == '\'' || *s == '"')
			c++;
	return c;
}

/* ParseHeredoc: ^(\d*)<<(-?)([^<]*)$.  Returns 1 and fills h when word is a
 * heredoc, 0 when not, -1 on error. */
int kiln_df_parse_heredoc_word(const char *word, struct kiln_df_heredoc *h, struct kiln_err *err)
{
	memset(h, 0, sizeof(*h));
	size_t i = 0;
	while (word[i] >= '0' && word[i] <= '9')
		i++;
	size_t digits = i;
	if (word[i] != '<' || word[i + 1] != '<')
		return 0;
	i += 2;
	bool chomp = false;
	if (word[i] == '-') {
		chomp = true;
		i++;
	}
	const char *rest = word + i;
	if (strchr(rest, '<'))
		return 0;
	if (!*rest)
		return 0;
	struct kiln_strv words = {0}, raw = {0};
	if (sh_words(rest, strlen(rest), false, false, &words, err) < 0) {
		kiln_strv_free(&words);
		return -1;
	}
	if (words.n != 1) {
		kiln_strv_free(&words);
		return 0;
	}
	if (sh_words(rest, strlen(rest), true, false, &raw, err) < 0) {
		kiln_strv_free(&words);
		kiln_strv_free(&raw);
		return -1;
	}
	if (raw.n != words.n) {
		kiln_strv_free(&words);
		kiln_strv_free(&raw);
		return kiln_err_set(err, 0, "internal lexing of heredoc produced inconsistent results: %s", rest);
	}
	h->name = kiln_xstrdup(words.v[0]);
	h->expand = count_quotes(words.v[0]) == count_quotes(raw.v[0]);
	h->chomp = chomp;
	h->fd = -1;
	if (digits > 0) {
		long v = 0;
		for (size_t k = 0; k < digits; k++) {
			v = v * 10 + (word[k] - '0');
			if (v > 0xFFFF) {
				v = 0xFFFF;
				break;
			}
		}
		h->fd = (int)v;
	}
	kiln_strv_free(&words);
	kiln_strv_free(&raw);
	return 1;
}

static bool can_contain_heredoc(const struct kiln_df_node *node)
{
	if (!strcmp(node->instr_lower, "onbuild") && node->onbuild)
		node = node->onbuild;
	const char *i = node->instr_lower;
	if (strcmp(i, "run") && strcmp(i, "copy") && strcmp(i, "add"))
		return false;
	return !node->json;
}

/* "<<", "<<-", "3<<", "3<<-": a heredoc operator without its word */
static bool heredoc_operator_alone(const char *w)
{
	while (*w >= '0' && *w <= '9')
		w++;
	if (w[0] != '<' || w[1] != '<')
		return false;
	w += 2;
	if (*w == '-')
		w++;
	return *w == 0;
}

/* heredocsFromLine: lex the whole line (raw quotes and escapes, lexing errors
 * mean "no heredocs") and take every word that is a heredoc. */
static int heredocs_from_line(const char *line, size_t n, struct kiln_df_heredoc **out, size_t *nout,
			      struct kiln_err *err)
{
	struct kiln_strv words = {0};
	struct kiln_err ignored = {0};
	if (sh_words(line, n, true, true, &words, &ignored) < 0) {
		kiln_strv_free(&words);
		return 0;
	}
	for (size_t i = 0; i < words.n; i++) {
		struct kiln_df_heredoc h;
		int rc;
		if (heredoc_operator_alone(words.v[i]) && i + 1 < words.n && !strchr(words.v[i + 1], '<')) {
			/* "<< EOF", "<<- EOF", "3<< EOF": the operator and the
			 * next word form one heredoc ("<< -EOF" names "-EOF") */
			char *joined = kiln_xasprintf("%s %s", words.v[i], words.v[i + 1]);
			rc = kiln_df_parse_heredoc_word(joined, &h, err);
			free(joined);
			if (rc == 1)
				i++;
		} else {
			rc = kiln_df_parse_heredoc_word(words.v[i], &h, err);
		}
		if (rc < 0) {
			kiln_strv_free(&words);
			return -1;
		}
		if (rc == 0)
			continue;
		*out = kiln_xrealloc(*out, (*nout + 1) * sizeof(**out));
		(*out)[(*nout)++] = h;
	}
	kiln_strv_free(&words);
	return 0;
}

/* (?m)^\t+ removed */
static char *chomp_tabs(const char *s)
{
	struct kiln_buf b = {0};
	bool bol = true;
	for (; *s; s++) {
		if (bol && *s == '\t')
			continue;
		bol = *s == '\n';
		kiln_buf_putc(&b, *s);
	}
	return buf_take(&b);
}

/* ---- the file --------------------------------------------------------- */

static void node_clear(struct kiln_df_node *n)
{
	if (!n)
		return;
	free(n->instr);
	free(n->instr_lower);
	kiln_strv_free(&n->flags);
	kiln_strv_free(&n->args);
	for (size_t i = 0; i < n->n_heredocs; i++) {
		free(n->heredocs[i].name);
		free(n->heredocs[i].content);
	}
	free(n->heredocs);
	free(n->original);
	free(n->rest);
	kiln_strv_free(&n->comments);
	if (n->onbuild) {
		node_clear(n->onbuild);
		free(n->onbuild);
	}
	memset(n, 0, sizeof(*n));
}

void kiln_df_free(struct kiln_df *df)
{
	if (!df)
		return;
	for (size_t i = 0; i < df->n_nodes; i++)
		node_clear(&df->nodes[i]);
	free(df->nodes);
	free(df->filename);
	free(df->syntax);
	free(df->check);
	kiln_strv_free(&df->warnings);
	free(df);
}

/* processLine: newline trimmed, leading blanks trimmed (first lines only),
 * directive detection, and a comment line becomes empty. */
static int process_line(struct pstate *ps, const char **s, size_t *n, bool strip_left, int line,
			bool *directive, struct kiln_err *err)
{
	trim_newline(*s, n);
	if (strip_left)
		trim_left_space(s, n);
	int rc = possible_directive(ps, *s, *n, line, err);
	if (rc < 0)
		return -1;
	*directive = rc == 1;
	if (is_comment(*s, *n))
		*n = 0;
	return 0;
}

static void comments_reset(struct kiln_strv *c)
{
	kiln_strv_free(c);
	memset(c, 0, sizeof(*c));
}

static int check_lines(struct pstate *ps, const char *text, size_t len, struct kiln_err *err)
{
	size_t pos = 0;
	int line = 1;
	while (pos < len) {
		const char *nl = memchr(text + pos, '\n', len - pos);
		size_t k = nl ? (size_t)(nl - (text + pos)) : len - pos;
		if (k >= KILN_DF_MAX_LINE)
			return perr(ps, line, err,
				    "dockerfile line greater than max allowed size of %d (split it with a line continuation)",
				    KILN_DF_MAX_LINE - 1);
		if (memchr(text + pos, '\0', k))
			return perr(ps, line, err, "the line contains a NUL byte (is this a text file?)");
		pos += k + 1;
		line++;
	}
	return 0;
}

int kiln_parse(const char *text, size_t len, const char *filename, struct kiln_df **out,
	       struct kiln_err *err)
{
	*out = NULL;
	struct kiln_df *df = kiln_xcalloc(1, sizeof(*df));
	df->filename = kiln_xstrdup(filename && *filename ? filename : "Dockerfile");
	df->escape = '\\';
	struct pstate ps = {.filename = df->filename, .escape = '\\', .df = df};
	struct kiln_strv comments = {0};
	struct kiln_buf buf = {0};
	size_t cap = 0;
	int current = 0;

	if (check_lines(&ps, text, len, err) < 0)
		goto fail;

	struct scan sc = {.p = text, .len = len};
	const char *raw;
	size_t rawn;
	while (scan_line(&sc, &raw, &rawn)) {
		const char *s = raw;
		size_t n = rawn;
		if (current == 0 && n >= 3 && !memcmp(s, "\xEF\xBB\xBF", 3)) {
			s += 3;
			n -= 3;
		}
		if (is_comment(s, n)) {
			const char *c = s + 1;
			size_t cn = n - 1;
			kiln_go_trim_space(&c, &cn);
			if (cn == 0)
				comments_reset(&comments);
			else
				kiln_strv_push_owned(&comments, xmemdup(c, cn));
		}
		bool directive = false;
		if (process_line(&ps, &s, &n, true, current + 1, &directive, err) < 0)
			goto fail;
		if (directive && comments.n > 0) {
			free(comments.v[--comments.n]);
			comments.v[comments.n] = NULL;
		}
		current++;
		int start = current;
		bool eol = trim_continuation(s, &n, ps.escape);
		if (eol && n == 0)
			continue;
		buf.len = 0;
		kiln_buf_append(&buf, s, n);
		bool empty_continuation = false;
		while (!eol && scan_line(&sc, &raw, &rawn)) {
			const char *c = raw;
			size_t cn = rawn;
			bool d2;
			if (process_line(&ps, &c, &cn, false, current + 1, &d2, err) < 0)
				goto fail;
			current++;
			if (is_comment(raw, rawn))
				continue;
			if (is_empty_continuation(c, cn)) {
				empty_continuation = true;
				continue;
			}
			eol = trim_continuation(c, &cn, ps.escape);
			kiln_buf_append(&buf, c, cn);
		}
		if (!buf.data)
			kiln_buf_append(&buf, "", 0);
		if (empty_continuation)
			kiln_strv_push_owned(&df->warnings,
					     kiln_xasprintf("%s:%d: empty continuation line in the instruction starting on line %d "
							    "(empty continuation lines will become errors in a future release; remove the blank line)",
							    ps.filename, current, start));

		if (df->n_nodes == cap) {
			cap = cap ? cap * 2 : 16;
			df->nodes = kiln_xrealloc(df->nodes, cap * sizeof(*df->nodes));
		}
		struct kiln_df_node *node = &df->nodes[df->n_nodes];
		if (node_from_line(&ps, buf.data, buf.len, node, err) < 0) {
			node_clear(node);
			kiln_err_wrap(err, "%s:%d", ps.filename, start);
			goto fail;
		}
		df->n_nodes++;
		node->comments = comments;
		memset(&comments, 0, sizeof(comments));

		if (can_contain_heredoc(node) && memmem(buf.data, buf.len, "<<", 2)) {
			if (heredocs_from_line(buf.data, buf.len, &node->heredocs, &node->n_heredocs, err) < 0) {
				kiln_err_wrap(err, "%s:%d", ps.filename, start);
				goto fail;
			}
			for (size_t h = 0; h < node->n_heredocs; h++) {
				struct kiln_df_heredoc *hd = &node->heredocs[h];
				struct kiln_buf content = {0};
				bool terminated = false;
				const char *name = hd->name;
				size_t name_len = strlen(name);
				while (scan_line(&sc, &raw, &rawn)) {
					current++;
					const char *t = raw;
					size_t tn = rawn;
					trim_newline(t, &tn);
					if (hd->chomp)
						while (tn > 0 && *t == '\t') {
							t++;
							tn--;
						}
					if (tn == name_len && !memcmp(t, name, tn)) {
						terminated = true;
						break;
					}
					kiln_buf_append(&content, raw, rawn);
				}
				char *body = buf_take(&content);
				if (hd->chomp) {
					hd->content = chomp_tabs(body);
					free(body);
				} else {
					hd->content = body;
				}
				if (!terminated) {
					perr(&ps, start, err,
					     "unterminated heredoc: no line '%s' ends the heredoc '<<%s%s' (add a line with just %s)",
					     name, hd->chomp ? "-" : "", name, name);
					goto fail;
				}
			}
		}
		node->start_line = start;
		node->end_line = current;
	}

	if (df->n_nodes == 0) {
		perr(&ps, 0, err, "file with no instructions (a Dockerfile needs at least a FROM instruction)");
		goto fail;
	}
	kiln_buf_free(&buf);
	kiln_strv_free(&comments);
	*out = df;
	return 0;
fail:
	kiln_buf_free(&buf);
	kiln_strv_free(&comments);
	kiln_df_free(df);
	return -1;
}

int kiln_df_errorf(const struct kiln_df *df, const struct kiln_df_node *node, struct kiln_err *err,
		   const char *fmt, ...)
{
	char msg[KILN_ERR_MSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	const char *file = df && df->filename ? df->filename : "Dockerfile";
	if (node && node->start_line > 0)
		return kiln_err_set(err, 0, "%s:%d: %s", file, node->start_line, msg);
	return kiln_err_set(err, 0, "%s: %s", file, msg);
}
