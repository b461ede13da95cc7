/* libFuzzer target: image references, manifests, indexes and descriptors
 * (security.md item 15: malformed manifests and digests must be refused, never crash).
 *
 * Input: byte 0 selects the parser (mod 4): 0 reference, 1 manifest, 2 image
 * index, 3 descriptor; the rest is the text.  Invariants: a parsed reference
 * prints to a string that parses to itself (and its familiar form parses to
 * the same full reference); an accepted manifest/index/descriptor re-parses
 * from its canonical dump; every refusal carries a message. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "builder/cli.h"
#include "common/err.h"
#include "common/util.h"
#include "layers/image.h"
#include "layers/store.h"

/* builder/main.c (not in the library) defines these; the command objects
 * linked into every fuzz target refer to them. */

static void fuzz_ref(const char *s)
{
	struct kiln_ref r;
	struct kiln_err err = {0};
	if (kiln_ref_parse(s, &r, &err) < 0) {
		if (!err.msg[0])
			__builtin_trap();
		return;
	}
	if (!r.domain || !r.path || (!r.tag && !r.digest))
		__builtin_trap();
	if (r.digest && !kiln_digest_valid(r.digest))
		__builtin_trap();
	char *full = kiln_ref_string(&r), *fam = kiln_ref_familiar(&r);
	char *again = kiln_ref_normalize(full, &err);
	char *from_fam = kiln_ref_normalize(fam, &err);
	if (!again || strcmp(again, full) || !from_fam || strcmp(from_fam, full))
		__builtin_trap();
	free(again);
	free(from_fam);
	free(full);
	free(fam);
	kiln_ref_free(&r);
}

static void reparse(json_t *j, int kind)
{
	char *t = kiln_json_canonical(j);
	json_t *k = NULL;
	struct kiln_err err = {0};
	int rc = kind == 1 ? kiln_manifest_parse(t, strlen(t), NULL, &k, &err) : kiln_index_parse(t, strlen(t), &k, &err);
	if (rc < 0 || !k)
		__builtin_trap();
	json_decref(k);
	free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 65536)
		return 0;
	int mode = data[0] % 4;
	char *text = kiln_xstrndup((const char *)data + 1, size - 1);
	size_t len = strlen(text);
	struct kiln_err err = {0};
	json_t *j = NULL;
	switch (mode) {
	case 0:
		fuzz_ref(text);
		break;
	case 1:
	case 2:
		if ((mode == 1 ? kiln_manifest_parse(text, len, NULL, &j, &err) : kiln_index_parse(text, len, &j, &err)) == 0) {
			if (!j)
				__builtin_trap();
			reparse(j, mode);
			json_decref(j);
		} else if (!err.msg[0] || j) {
			__builtin_trap();
		}
		break;
	case 3: {
		j = json_loads(text, 0, NULL);
		struct kiln_desc d;
		if (j && kiln_desc_from_json(j, &d, &err) == 0) {
			if (!kiln_digest_valid(d.digest) || d.size < 0 || !d.media_type[0])
				__builtin_trap();
			json_t *back = kiln_desc_to_json(&d);
			struct kiln_desc d2;
			if (kiln_desc_from_json(back, &d2, &err) < 0 || memcmp(&d, &d2, sizeof(d)))
				__builtin_trap();
			json_decref(back);
		}
		json_decref(j);
		break;
	}
	}
	free(text);
	return 0;
}
