/* Unit tests: layers/store (digests, layout, blobs, tags, gc, fsck). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/util.h"
#include "layers/image.h"
#include "layers/store.h"

#define SHA_EMPTY "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define SHA_ABC "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

static char *new_root(void)
{
	char tmpl[] = "/tmp/kiln-unit-store-XXXXXX";
	assert_non_null(mkdtemp(tmpl));
	return kiln_xasprintf("%s/root", tmpl);
}

static void drop_root(char *root)
{
	struct kiln_err err = {0};
	char *parent = kiln_xstrdup(root);
	*strrchr(parent, '/') = '\0';
	kiln_rm_rf(parent, &err);
	free(parent);
	free(root);
}

static struct kiln_store *open_rw(const char *root)
{
	struct kiln_store *s = NULL;
	struct kiln_err err = {0};
	if (kiln_store_open(root, KILN_STORE_RDWR, &s, &err) < 0)
		fail_msg("open %s: %s", root, err.msg);
	return s;
}

static size_t count_dir(const char *path)
{
	DIR *d = opendir(path);
	if (!d)
		return 0;
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static void test_digests(void **state)
{
	(void)state;
	char d[KILN_DIGEST_MAX];
	kiln_digest_data("", 0, d);
	assert_string_equal(d, SHA_EMPTY);
	kiln_digest_data("abc", 3, d);
	assert_string_equal(d, SHA_ABC);
	assert_true(kiln_digest_valid(SHA_ABC));
	assert_false(kiln_digest_valid("sha256:BA7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
	assert_false(kiln_digest_valid("sha256:ba7816"));
	assert_false(kiln_digest_valid("sha512:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
	assert_false(kiln_digest_valid("sha256:../../../etc/passwd0000000000000000000000000000000000000000000"));
	assert_false(kiln_digest_valid(NULL));
	int p[2];
	assert_int_equal(pipe(p), 0);
	assert_int_equal(write(p[1], "abc", 3), 3);
	close(p[1]);
	int64_t size = -1;
	struct kiln_err err = {0};
	assert_int_equal(kiln_digest_fd(p[0], d, &size, &err), 0);
	close(p[0]);
	assert_string_equal(d, SHA_ABC);
	assert_int_equal(size, 3);
}

static void test_layout(void **state)
{
	(void)state;
	char *root = new_root();
	struct kiln_err err = {0};
	struct kiln_store *s = NULL;
	/* read-only open of a missing store fails clearly */
	assert_int_equal(kiln_store_open(root, KILN_STORE_RDONLY, &s, &err), -1);
	assert_null(s);
	/* a plain OCI layout (another tool's) opens read-only without kiln's files */
	assert_int_equal(kiln_mkdir_p(root, 0755, &err), 0);
	char *bl = kiln_xasprintf("%s/blobs/sha256", root);
	assert_int_equal(kiln_mkdir_p(bl, 0755, &err), 0);
	free(bl);
	char *lay = kiln_xasprintf("%s/oci-layout", root);
	assert_int_equal(kiln_write_file_atomic(AT_FDCWD, lay, "{\"imageLayoutVersion\":\"1.0.0\"}", 30, 0644, &err), 0);
	free(lay);
	assert_int_equal(kiln_store_open(root, KILN_STORE_RDONLY, &s, &err), 0);
	char *lockp = kiln_xasprintf("%s/lock", root);
	assert_int_equal(access(lockp, F_OK), -1);   /* nothing written */
	free(lockp);
	kiln_store_close(s);
	s = open_rw(root);
	assert_string_equal(kiln_store_root_path(s), root);
	assert_true(kiln_store_dirfd(s) >= 0);
	struct stat st;
	assert_int_equal(stat(root, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	char *data;
	size_t len;
	char *p = kiln_xasprintf("%s/oci-layout", root);
	assert_int_equal(kiln_read_file(p, 0, &data, &len, &err), 0);
	assert_string_equal(data, "{\"imageLayoutVersion\":\"1.0.0\"}");
	free(data);
	free(p);
	p = kiln_xasprintf("%s/index.json", root);
	assert_int_equal(kiln_read_file(p, 0, &data, &len, &err), 0);
	assert_non_null(strstr(data, "\"schemaVersion\":2"));
	assert_non_null(strstr(data, "\"manifests\":[]"));
	free(data);
	free(p);
	const char *dirs[] = {"blobs/sha256", "tmp", "snapshots", "cache", "containers"};
	for (size_t i = 0; i < 5; i++) {
		p = kiln_xasprintf("%s/%s", root, dirs[i]);
		assert_int_equal(stat(p, &st), 0);
		assert_true(S_ISDIR(st.st_mode));
		free(p);
	}
	/* a second, read-only handle works while the first is open */
	struct kiln_store *ro = NULL;
	assert_int_equal(kiln_store_open(root, KILN_STORE_RDONLY, &ro, &err), 0);
	assert_int_equal(kiln_store_blob_put(ro, "x", 1, NULL, &err), -1);
	kiln_store_close(ro);
	kiln_store_close(s);
	/* stale staging files are removed at the next open */
	p = kiln_xasprintf("%s/tmp/stale", root);
	assert_int_equal(kiln_write_file_atomic(AT_FDCWD, p, "x", 1, 0600, &err), 0);
	free(p);
	s = open_rw(root);
	p = kiln_xasprintf("%s/tmp", root);
	assert_int_equal(count_dir(p), 0);
	free(p);
	kiln_store_close(s);
	drop_root(root);
}

static void test_blobs(void **state)
{
	(void)state;
	char *root = new_root();
	struct kiln_store *s = open_rw(root);
	struct kiln_err err = {0};
	char d[KILN_DIGEST_MAX];
	assert_int_equal(kiln_store_blob_put(s, "abc", 3, d, &err), 0);
	assert_string_equal(d, SHA_ABC);
	assert_true(kiln_store_blob_exists(s, SHA_ABC));
	assert_false(kiln_store_blob_exists(s, SHA_EMPTY));
	int64_t size;
	assert_int_equal(kiln_store_blob_size(s, SHA_ABC, &size, &err), 0);
	assert_int_equal(size, 3);
	char *data;
	size_t len;
	assert_int_equal(kiln_store_blob_read(s, SHA_ABC, 0, &data, &len, &err), 0);
	assert_int_equal(len, 3);
	assert_memory_equal(data, "abc", 3);
	free(data);
	char *path = kiln_store_blob_path(s, SHA_ABC);
	char *want = kiln_xasprintf("%s/blobs/sha256/%s", root, SHA_ABC + 7);
	assert_string_equal(path, want);
	free(want);
	assert_null(kiln_store_blob_path(s, "sha256:nope"));
	assert_int_equal(kiln_store_blob_verify(s, SHA_ABC, &err), 0);

	/* missing blob: ENOENT */
	int fd;
	assert_int_equal(kiln_store_blob_open(s, SHA_EMPTY, &fd, &err), -1);
	assert_int_equal(err.errnum, ENOENT);

	/* streaming writer, through kiln_blob_write */
	struct kiln_blob_writer *w;
	assert_int_equal(kiln_store_blob_begin(s, &w, &err), 0);
	assert_int_equal(kiln_blob_write(w, "hello ", 6, &err), 0);
	assert_int_equal(kiln_blob_write(w, "world", 5, &err), 0);
	char expect[KILN_DIGEST_MAX];
	kiln_digest_data("hello world", 11, expect);
	int64_t wsize;
	assert_int_equal(kiln_store_blob_commit(w, expect, d, &wsize, &err), 0);
	assert_string_equal(d, expect);
	assert_int_equal(wsize, 11);

	/* through the raw fd (digested at commit) */
	assert_int_equal(kiln_store_blob_begin(s, &w, &err), 0);
	assert_int_equal(write(kiln_blob_writer_fd(w), "raw bytes", 9), 9);
	assert_int_equal(kiln_store_blob_commit(w, NULL, d, &wsize, &err), 0);
	kiln_digest_data("raw bytes", 9, expect);
	assert_string_equal(d, expect);
	assert_int_equal(wsize, 9);
	assert_true(kiln_store_blob_exists(s, expect));

	/* a wrong expected digest stores nothing */
	assert_int_equal(kiln_store_blob_begin(s, &w, &err), 0);
	assert_int_equal(kiln_blob_write(w, "evil", 4, &err), 0);
	assert_int_equal(kiln_store_blob_commit(w, SHA_ABC, d, NULL, &err), -1);
	assert_non_null(strstr(err.msg, "digest mismatch"));
	kiln_digest_data("evil", 4, expect);
	assert_false(kiln_store_blob_exists(s, expect));
	/* abort leaves nothing behind */
	assert_int_equal(kiln_store_blob_begin(s, &w, &err), 0);
	assert_int_equal(kiln_blob_write(w, "gone", 4, &err), 0);
	kiln_store_blob_abort(w);
	char *tmp = kiln_xasprintf("%s/tmp", root);
	assert_int_equal(count_dir(tmp), 0);
	free(tmp);

	/* import from an fd with verification */
	int p[2];
	assert_int_equal(pipe(p), 0);
	assert_int_equal(write(p[1], "abc", 3), 3);
	close(p[1]);
	assert_int_equal(kiln_store_blob_import_fd(s, p[0], SHA_ABC, d, &wsize, &err), 0);
	close(p[0]);

	/* a corrupted blob is detected by read and verify */
	assert_int_equal(chmod(path, 0644), 0);
	fd = open(path, O_WRONLY | O_TRUNC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "abd", 3), 3);
	close(fd);
	assert_int_equal(kiln_store_blob_read(s, SHA_ABC, 0, &data, &len, &err), -1);
	assert_non_null(strstr(err.msg, "corrupt"));
	assert_int_equal(kiln_store_blob_verify(s, SHA_ABC, &err), -1);
	assert_int_equal(kiln_store_blob_remove(s, SHA_ABC, &err), 0);
	assert_false(kiln_store_blob_exists(s, SHA_ABC));
	free(path);
	kiln_store_close(s);
	drop_root(root);
}

/* A minimal committed image: returns its manifest descriptor. */
static void make_image(struct kiln_store *s, const char *cmd, const char *tag, struct kiln_desc *md)
{
	struct kiln_err err = {0};
	struct kiln_image *img = kiln_image_new_scratch();
	char *argv[] = {(char *)cmd, NULL};
	kiln_image_set_strv(img, "Cmd", argv);
	const char *tags[] = {tag, NULL};
	if (kiln_image_commit(s, img, tag ? tags : NULL, NULL, &err) < 0)
		fail_msg("commit: %s", err.msg);
	*md = img->manifest;
	kiln_image_free(img);
}

static size_t count_entries(struct kiln_store *s, size_t *untagged)
{
	struct kiln_tag *v;
	size_t n;
	struct kiln_err err = {0};
	assert_int_equal(kiln_store_tag_list(s, &v, &n, &err), 0);
	*untagged = 0;
	for (size_t i = 0; i < n; i++)
		if (!v[i].ref)
			(*untagged)++;
	kiln_store_tags_free(v, n);
	return n;
}

static void test_tags(void **state)
{
	(void)state;
	setenv("SOURCE_DATE_EPOCH", "1700000000", 1);
	char *root = new_root();
	struct kiln_store *s = open_rw(root);
	struct kiln_err err = {0};
	struct kiln_desc a, b, got;
	make_image(s, "a", NULL, &a);
	make_image(s, "b", NULL, &b);
	size_t untagged;
	assert_int_equal(count_entries(s, &untagged), 2);
	assert_int_equal(untagged, 2);
	assert_int_equal(kiln_store_tag_set(s, "busybox", &a, &err), 0);
	assert_int_equal(count_entries(s, &untagged), 2);   /* a's untagged entry is replaced */
	assert_int_equal(untagged, 1);
	/* any spelling of the same reference finds it */
	assert_int_equal(kiln_store_tag_get(s, "docker.io/library/busybox:latest", &got, &err), 0);
	assert_string_equal(got.digest, a.digest);
	assert_int_equal(kiln_store_tag_get(s, "busybox:latest", &got, &err), 0);
	assert_int_equal(kiln_store_tag_get(s, "busybox:other", &got, &err), -1);
	assert_int_equal(err.errnum, ENOENT);
	/* the full reference is in index.json as both annotations */
	char *p = kiln_xasprintf("%s/index.json", root), *data;
	size_t len;
	assert_int_equal(kiln_read_file(p, 0, &data, &len, &err), 0);
	assert_non_null(strstr(data, "\"org.opencontainers.image.ref.name\":\"docker.io/library/busybox:latest\""));
	assert_non_null(strstr(data, "\"io.containerd.image.name\":\"docker.io/library/busybox:latest\""));
	free(data);
	free(p);
	/* moving the tag keeps the old image as an untagged entry */
	assert_int_equal(kiln_store_tag_set(s, "busybox", &b, &err), 0);
	assert_int_equal(kiln_store_tag_get(s, "busybox", &got, &err), 0);
	assert_string_equal(got.digest, b.digest);
	assert_int_equal(count_entries(s, &untagged), 2);
	assert_int_equal(untagged, 1);
	assert_int_equal(kiln_store_tag_set(s, "me/app:1", &b, &err), 0);
	assert_int_equal(count_entries(s, &untagged), 3);
	/* remove one tag of two: the image keeps the other */
	assert_int_equal(kiln_store_tag_remove(s, "me/app:1", true, &err), 0);
	assert_int_equal(count_entries(s, &untagged), 2);
	assert_int_equal(untagged, 1);
	/* remove the last tag, keeping the image untagged */
	assert_int_equal(kiln_store_tag_remove(s, "busybox", true, &err), 0);
	assert_int_equal(count_entries(s, &untagged), 2);
	assert_int_equal(untagged, 2);
	assert_int_equal(kiln_store_tag_remove(s, "busybox", true, &err), -1);
	assert_int_equal(err.errnum, ENOENT);
	assert_int_equal(kiln_store_index_remove_digest(s, a.digest, &err), 0);
	assert_int_equal(count_entries(s, &untagged), 1);
	/* invalid references and missing manifests are refused */
	assert_int_equal(kiln_store_tag_set(s, "UPPER", &b, &err), -1);
	struct kiln_desc bogus = b;
	kiln_digest_data("nope", 4, bogus.digest);
	assert_int_equal(kiln_store_tag_set(s, "x", &bogus, &err), -1);
	kiln_store_close(s);
	drop_root(root);
}

static int roots_cb(struct kiln_store *s, struct kiln_strv *roots, void *ctx, struct kiln_err *err)
{
	(void)s;
	(void)err;
	kiln_strv_push(roots, (const char *)ctx);
	return 0;
}

static void test_gc(void **state)
{
	(void)state;
	setenv("SOURCE_DATE_EPOCH", "1700000000", 1);
	char *root = new_root();
	struct kiln_store *s = open_rw(root);
	struct kiln_err err = {0};
	struct kiln_desc a, b;
	make_image(s, "a", "keep", &a);
	make_image(s, "b", "drop", &b);
	struct kiln_image *ib;
	assert_int_equal(kiln_image_load(s, "drop", &ib, &err), 0);
	char bconfig[KILN_DIGEST_MAX];
	memcpy(bconfig, ib->id, sizeof(bconfig));
	kiln_image_free(ib);
	char loose[KILN_DIGEST_MAX], kept[KILN_DIGEST_MAX];
	assert_int_equal(kiln_store_blob_put(s, "loose", 5, loose, &err), 0);
	assert_int_equal(kiln_store_blob_put(s, "kept by the cache", 17, kept, &err), 0);
	assert_int_equal(kiln_store_tag_remove(s, "drop", false, &err), 0);

	/* another open handle makes gc_try back off */
	struct kiln_store *other = open_rw(root);
	struct kiln_gc_stats st;
	assert_int_equal(kiln_store_gc_try(s, NULL, NULL, &st, &err), 1);
	assert_true(kiln_store_blob_exists(s, loose));
	kiln_store_close(other);

	/* a read-only handle does not hold gc back */
	struct kiln_store *ro = NULL;
	assert_int_equal(kiln_store_open(root, KILN_STORE_RDONLY, &ro, &err), 0);
	assert_int_equal(kiln_store_gc(s, roots_cb, kept, &st, &err), 0);
	kiln_store_close(ro);
	assert_true(st.blobs_removed >= 3);   /* loose, b's manifest, b's config */
	assert_false(kiln_store_blob_exists(s, loose));
	assert_false(kiln_store_blob_exists(s, b.digest));
	assert_false(kiln_store_blob_exists(s, bconfig));
	assert_true(kiln_store_blob_exists(s, kept));
	assert_true(kiln_store_blob_exists(s, a.digest));
	assert_true(kiln_store_blob_exists(s, "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"));
	struct kiln_image *ia;
	assert_int_equal(kiln_image_load(s, "keep", &ia, &err), 0);
	kiln_image_free(ia);
	/* the store is still usable after gc */
	assert_int_equal(kiln_store_blob_put(s, "after", 5, NULL, &err), 0);
	kiln_store_close(s);
	drop_root(root);
}

/* Can another process take the store lock shared right now (as an RDWR
 * open does)?  Asked from a child: flock locks belong to the open file. */
static bool others_can_open(const char *root)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char *p = kiln_xasprintf("%s/lock", root);
		int fd = open(p, O_RDWR | O_CLOEXEC);
		_exit(fd >= 0 && flock(fd, LOCK_SH | LOCK_NB) == 0 ? 0 : 1);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* The exclusive lock keeps other writers out across several collections
 * (gc inside it keeps it), nests, and is given back as the shared one. */
static void test_exclusive_lock(void **state)
{
	(void)state;
	char *root = new_root();
	struct kiln_store *s = open_rw(root);
	struct kiln_err err = {0};
	assert_true(others_can_open(root));
	struct kiln_store *other = open_rw(root);
	assert_int_equal(kiln_store_lock_exclusive(s, false, &err), 1);   /* busy */
	assert_true(others_can_open(root));                               /* ours is shared again */
	kiln_store_close(other);
	assert_int_equal(kiln_store_lock_exclusive(s, false, &err), 0);
	assert_false(others_can_open(root));
	assert_int_equal(kiln_store_lock_exclusive(s, true, &err), 0);    /* nested */
	struct kiln_gc_stats st;
	assert_int_equal(kiln_store_gc(s, NULL, NULL, &st, &err), 0);
	assert_false(others_can_open(root));                              /* gc kept it */
	kiln_store_unlock_exclusive(s);
	assert_false(others_can_open(root));
	kiln_store_unlock_exclusive(s);
	assert_true(others_can_open(root));
	assert_int_equal(kiln_store_blob_put(s, "after", 5, NULL, &err), 0);
	kiln_store_close(s);
	drop_root(root);
}

static void test_fsck(void **state)
{
	(void)state;
	setenv("SOURCE_DATE_EPOCH", "1700000000", 1);
	char *root = new_root();
	struct kiln_store *s = open_rw(root);
	struct kiln_err err = {0};
	struct kiln_desc a;
	make_image(s, "a", "img", &a);
	struct kiln_fsck_report r;
	assert_int_equal(kiln_store_fsck(s, &r, &err), 0);
	assert_int_equal(r.problems.n, 0);
	assert_int_equal(r.blobs_checked, 3);
	assert_int_equal(r.images_checked, 1);
	kiln_fsck_report_free(&r);

	/* corrupt the layer blob */
	char *lp = kiln_store_blob_path(s, "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef");
	assert_int_equal(chmod(lp, 0644), 0);
	int fd = open(lp, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "X", 1), 1);
	close(fd);
	assert_int_equal(kiln_store_fsck(s, &r, &err), 0);
	assert_true(r.problems.n >= 1);
	bool found = false;
	for (size_t i = 0; i < r.problems.n; i++)
		if (strstr(r.problems.v[i], "5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef") &&
		    strstr(r.problems.v[i], "corrupt"))
			found = true;
	assert_true(found);
	kiln_fsck_report_free(&r);
	/* a missing config is a broken reference */
	unlink(lp);
	free(lp);
	struct kiln_image *img;
	assert_int_equal(kiln_image_load(s, "img", &img, &err), 0);
	char *cp = kiln_store_blob_path(s, img->id);
	kiln_image_free(img);
	unlink(cp);
	free(cp);
	assert_int_equal(kiln_store_fsck(s, &r, &err), 0);
	found = false;
	for (size_t i = 0; i < r.problems.n; i++)
		if (strstr(r.problems.v[i], "config") && strstr(r.problems.v[i], "missing"))
			found = true;
	assert_true(found);
	kiln_fsck_report_free(&r);
	/* junk in blobs/ is reported */
	char *junk = kiln_xasprintf("%s/blobs/sha256/junk", root);
	assert_int_equal(kiln_write_file_atomic(AT_FDCWD, junk, "j", 1, 0644, &err), 0);
	free(junk);
	assert_int_equal(kiln_store_fsck(s, &r, &err), 0);
	found = false;
	for (size_t i = 0; i < r.problems.n; i++)
		if (strstr(r.problems.v[i], "junk"))
			found = true;
	assert_true(found);
	kiln_fsck_report_free(&r);
	kiln_store_close(s);
	drop_root(root);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_digests),
		cmocka_unit_test(test_layout),
		cmocka_unit_test(test_blobs),
		cmocka_unit_test(test_tags),
		cmocka_unit_test(test_gc),
		cmocka_unit_test(test_exclusive_lock),
		cmocka_unit_test(test_fsck),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
