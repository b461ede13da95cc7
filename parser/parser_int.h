/* kiln — parser internals shared between the parser .c files of the parser
 * engineer (Go-compatible UTF-8 and whitespace rules). Not a public API. */
#ifndef KILN_PARSER_PARSER_INT_H
#define KILN_PARSER_PARSER_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"

#define KILN_RUNE_ERROR 0xFFFDu

/* utf8.DecodeRune: width of the rune at s (1 with U+FFFD when invalid). */
size_t kiln_go_decode(const char *s, size_t n, uint32_t *r);
/* unicode.IsSpace */
bool kiln_go_is_space(uint32_t r);
/* unicode.IsPrint */
bool kiln_go_is_print(uint32_t r);
/* Append the UTF-8 encoding of r (invalid runes as U+FFFD). */
void kiln_go_put_rune(struct kiln_buf *b, uint32_t r);
/* strings.TrimSpace on a slice. */
void kiln_go_trim_space(const char **s, size_t *n);
/* strings.ToLower for ASCII letters; returns a new string. */
char *kiln_go_lower(const char *s, size_t n);

#endif
