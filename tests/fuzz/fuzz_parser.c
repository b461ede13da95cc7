/* libFuzzer target: the Dockerfile parser.  Parses, dumps, checks every
 * instruction and frees; any crash, sanitizer report or leak is a bug. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/util.h"
#include "parser/parser.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kiln_df *df = NULL;
	struct kiln_err err = {0};
	if (kiln_parse((const char *)data, size, "Dockerfile", &df, &err) < 0) {
		/* Every failure carries a message naming the file. */
		if (strncmp(err.msg, "Dockerfile", 10))
			__builtin_trap();
		return 0;
	}
	struct kiln_buf b = {0};
	kiln_df_dump(df, &b);
	/* One dump line per instruction. */
	size_t lines = 0;
	for (size_t i = 0; i < b.len; i++)
		lines += b.data[i] == '\n';
	if (lines != df->n_nodes)
		__builtin_trap();
	kiln_buf_free(&b);
	if (kiln_df_check(df, &err) < 0 && strncmp(err.msg, "Dockerfile", 10))
		__builtin_trap();
	for (size_t i = 0; i < df->n_nodes; i++) {
		const struct kiln_flag_spec *spec = kiln_df_flag_spec(df->nodes[i].instr_lower);
		size_t n = 0;
		if (spec)
			while (spec[n].name)
				n++;
		struct kiln_flag_value *v = calloc(n + 1, sizeof(*v));
		if (spec && v && kiln_df_node_flags(df, &df->nodes[i], spec, v, &err) == 0)
			kiln_flag_values_free(v, n);
		free(v);
	}
	kiln_df_free(df);
	return 0;
}
