/* kiln rmi [-f] IMAGE... — untag, and delete images that lose their last tag. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "builder/cli.h"
#include "builder/reclaim.h"
#include "layers/image.h"
#include "layers/store.h"

static void usage(FILE *f)
{
	fprintf(f, "Usage: kiln rmi [OPTIONS] IMAGE [IMAGE...]\n\n"
		   "Remove one or more images\n\n"
		   "Options:\n"
		   "  -f, --force      Force removal of the image\n"
		   "      --no-prune   Do not delete unreferenced blobs and snapshots now (image prune does)\n");
}

static bool strv_has(const struct kiln_strv *v, const char *s)
{
	for (size_t i = 0; i < v->n; i++)
		if (!strcmp(v->v[i], s))
			return true;
	return false;
}

static int remove_one(struct kiln_store *s, const char *name, bool force, const struct kiln_strv *in_use,
		      struct kiln_err *err)
{
	struct kiln_desc md;
	char id[KILN_DIGEST_MAX];
	if (kiln_image_resolve(s, name, &md, id, err) < 0)
		return -1;
	char shortid[16];
	kiln_short_id(id[0] ? id : md.digest, shortid);
	/* Is NAME one of its tags? */
	bool by_tag = false;
	struct kiln_ref r;
	struct kiln_err e = {0};
	char *norm = NULL;
	if (kiln_ref_parse(name, &r, &e) == 0) {
		if (!r.digest) {
			struct kiln_desc t;
			norm = kiln_ref_string(&r);
			by_tag = kiln_store_tag_get(s, norm, &t, &e) == 0 && !strcmp(t.digest, md.digest);
		}
		kiln_ref_free(&r);
	}
	struct kiln_image_entry *v;
	size_t n;
	if (kiln_image_list(s, &v, &n, err) < 0) {
		free(norm);
		return -1;
	}
	struct kiln_image_entry *ent = NULL;
	for (size_t i = 0; i < n; i++)
		if (!strcmp(v[i].manifest.digest, md.digest) || (id[0] && !strcmp(v[i].id, id)))
			ent = &v[i];
	int rc = -1;
	size_t nrefs = ent ? ent->refs.n : 0;
	bool last = !by_tag || nrefs <= 1;
	if (last && id[0] && strv_has(in_use, id) && !force) {
		kiln_err_set(err, 0, "conflict: unable to remove image %s (must be forced) - a container is using it",
			     by_tag ? name : shortid);
		goto out;
	}
	if (!by_tag && nrefs > 1 && !force) {
		kiln_err_set(err, 0, "conflict: unable to delete %s (must be forced) - image is referenced in multiple repositories",
			     shortid);
		goto out;
	}
	if (by_tag) {
		if (kiln_store_tag_remove(s, norm, false, err) < 0)
			goto out;
		char *fam = kiln_ref_familiarize(norm);
		printf("Untagged: %s\n", fam);
		free(fam);
		if (!last) {
			rc = 0;
			goto out;
		}
	} else {
		for (size_t i = 0; i < nrefs; i++) {
			if (kiln_store_tag_remove(s, ent->refs.v[i], false, err) < 0 && err->errnum != ENOENT)
				goto out;
			char *fam = kiln_ref_familiarize(ent->refs.v[i]);
			printf("Untagged: %s\n", fam);
			free(fam);
		}
	}
	if (kiln_store_index_remove_digest(s, md.digest, err) < 0)
		goto out;
	printf("Deleted: %s\n", id[0] ? id : md.digest);
	rc = 0;
out:
	kiln_image_list_free(v, n);
	free(norm);
	return rc;
}

int kiln_cmd_rmi(int argc, char **argv)
{
	bool force = false, prune = true;
	struct kiln_strv names = {0};
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			kiln_strv_free(&names);
			return 0;
		} else if (!strcmp(a, "-f") || !strcmp(a, "--force")) {
			force = true;
		} else if (!strcmp(a, "--no-prune")) {
			prune = false;
		} else if (a[0] == '-' && a[1]) {
			fprintf(stderr, "kiln: rmi: unknown option %s\n", a);
			kiln_strv_free(&names);
			return KILN_EXIT_USAGE;
		} else {
			kiln_strv_push(&names, a);
		}
	}
	if (!names.n) {
		fprintf(stderr, "kiln: \"rmi\" requires at least 1 argument\n");
		return KILN_EXIT_USAGE;
	}
	struct kiln_err err = {0};
	struct kiln_store *s = NULL;
	if (kiln_store_open(kiln_global.root, KILN_STORE_RDWR, &s, &err) < 0) {
		kiln_err_print(&err);
		kiln_strv_free(&names);
		return KILN_EXIT_FAIL;
	}
	struct kiln_strv in_use = {0};
	kiln_image_ids_in_use(s, &in_use);
	int rc = 0;
	for (size_t i = 0; i < names.n; i++) {
		kiln_err_clear(&err);
		if (remove_one(s, names.v[i], force, &in_use, &err) < 0) {
			if (err.errnum == ENOENT && force)
				continue;
			kiln_err_print(&err);
			rc = KILN_EXIT_FAIL;
		}
	}
	if (prune) {
		/* free the space now (blobs and unpacked snapshots) when nobody else
		 * uses the store; image prune otherwise */
		struct kiln_reclaim_stats st;
		kiln_err_clear(&err);
		if (kiln_reclaim_gc(s, false, &st, &err) < 0)
			kiln_err_print(&err);
	}
	kiln_strv_free(&in_use);
	kiln_store_close(s);
	kiln_strv_free(&names);
	return rc;
}
