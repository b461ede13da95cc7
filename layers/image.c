/* kiln — image references and the OCI image model (see image.h). */
#include "layers/image.h"

#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>

#include "common/units.h"

#define DEFAULT_DOMAIN "docker.io"
#define JSON_BLOB_MAX (16u << 20)

/* ---------------------------------------------------------------- references */

void kiln_ref_free(struct kiln_ref *r)
{
	if (!r)
		return;
	free(r->domain);
	free(r->path);
	free(r->tag);
	free(r->digest);
	memset(r, 0, sizeof(*r));
}

static bool is_lower_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* One path component: [a-z0-9]+ ((\.|_|__|-+)[a-z0-9]+)* */
static bool valid_component(const char *s, size_t n)
{
	if (n == 0 || !is_lower_alnum(s[0]) || !is_lower_alnum(s[n - 1]))
		return false;
	for (size_t i = 0; i < n;) {
		if (is_lower_alnum(s[i])) {
			i++;
			continue;
		}
		size_t j = i;
		while (j < n && !is_lower_alnum(s[j]))
			j++;
		size_t sl = j - i;
		const char *sep = s + i;
		bool ok = (sl == 1 && (sep[0] == '.' || sep[0] == '_' || sep[0] == '-')) ||
			  (sl == 2 && sep[0] == '_' && sep[1] == '_');
		if (!ok) {
			ok = true;
			for (size_t k = 0; k < sl; k++)
				if (sep[k] != '-')
					ok = false;
		}
		if (!ok)
			return false;
		i = j;
	}
	return true;
}

static bool valid_domain(const char *s)
{
	const char *colon = strchr(s, ':');
	size_t hn = colon ? (size_t)(colon - s) : strlen(s);
	if (hn == 0)
		return false;
	for (size_t i = 0; i < hn; i++)
		if (!(isalnum((unsigned char)s[i]) || s[i] == '.' || s[i] == '-'))
			return false;
	if (colon) {
		if (!colon[1])
			return false;
		for (const char *p = colon + 1; *p; p++)
			if (!isdigit((unsigned char)*p))
				return false;
	}
	return true;
}

static bool valid_tag(const char *t)
{
	size_t n = strlen(t);
	if (n == 0 || n > 128)
		return false;
	if (!(isalnum((unsigned char)t[0]) || t[0] == '_'))
		return false;
	for (size_t i = 1; i < n; i++)
		if (!(isalnum((unsigned char)t[i]) || t[i] == '_' || t[i] == '.' || t[i] == '-'))
			return false;
	return true;
}

int kiln_ref_parse(const char *in, struct kiln_ref *out, struct kiln_err *err)
{
	memset(out, 0, sizeof(*out));
	if (!in || !*in)
		return kiln_err_set(err, 0, "invalid reference format: empty name");
	if (strlen(in) > 4096)
		return kiln_err_set(err, 0, "invalid reference format: name too long");
	char *s = kiln_xstrdup(in);
	char *at = strchr(s, '@');
	if (at) {
		*at = '\0';
		if (!kiln_digest_valid(at + 1)) {
			kiln_err_set(err, 0, "invalid reference format: bad digest in \"%s\"", in);
			goto fail;
		}
		out->digest = kiln_xstrdup(at + 1);
	}
	char *slash = strrchr(s, '/');
	char *colon = strrchr(slash ? slash : s, ':');
	if (colon) {
		*colon = '\0';
		if (!valid_tag(colon + 1)) {
			kiln_err_set(err, 0, "invalid reference format: bad tag in \"%s\"", in);
			goto fail;
		}
		out->tag = kiln_xstrdup(colon + 1);
	}
	/* domain: the first component when it looks like a host */
	char *first_slash = strchr(s, '/');
	const char *rest = s;
	if (first_slash) {
		size_t fl = (size_t)(first_slash - s);
		bool host = memchr(s, '.', fl) || memchr(s, ':', fl) || (fl == 9 && !strncmp(s, "localhost", 9));
		for (size_t i = 0; i < fl && !host; i++)
			if (isupper((unsigned char)s[i]))
				host = true;
		if (host) {
			out->domain = kiln_xstrndup(s, fl);
			rest = first_slash + 1;
			if (!valid_domain(out->domain)) {
				kiln_err_set(err, 0, "invalid reference format: bad registry \"%s\"", out->domain);
				goto fail;
			}
		}
	}
	if (!out->domain || !strcmp(out->domain, "index.docker.io") ||
	    !strcmp(out->domain, "registry-1.docker.io")) {
		free(out->domain);
		out->domain = kiln_xstrdup(DEFAULT_DOMAIN);
	}
	if (!*rest) {
		kiln_err_set(err, 0, "invalid reference format: \"%s\" has no repository", in);
		goto fail;
	}
	for (const char *p = rest; *p; p++)
		if (isupper((unsigned char)*p)) {
			kiln_err_set(err, 0, "invalid reference format: repository name (%s) must be lowercase",
				     rest);
			goto fail;
		}
	for (const char *c = rest;;) {
		const char *e = strchr(c, '/');
		size_t n = e ? (size_t)(e - c) : strlen(c);
		if (!valid_component(c, n)) {
			kiln_err_set(err, 0, "invalid reference format: \"%s\"", in);
			goto fail;
		}
		if (!e)
			break;
		c = e + 1;
	}
	if (!strcmp(out->domain, DEFAULT_DOMAIN) && !strchr(rest, '/'))
		out->path = kiln_xasprintf("library/%s", rest);
	else
		out->path = kiln_xstrdup(rest);
	if (strlen(out->domain) + strlen(out->path) + 1 > 255) {
		kiln_err_set(err, 0, "invalid reference format: repository name must not be more than 255 characters");
		goto fail;
	}
	if (!out->tag && !out->digest)
		out->tag = kiln_xstrdup("latest");
	free(s);
	return 0;
fail:
	free(s);
	kiln_ref_free(out);
	return -1;
}

char *kiln_ref_repo(const struct kiln_ref *r)
{
	return kiln_xasprintf("%s/%s", r->domain, r->path);
}

char *kiln_ref_familiar_repo(const struct kiln_ref *r)
{
	if (!strcmp(r->domain, DEFAULT_DOMAIN)) {
		if (!strncmp(r->path, "library/", 8) && !strchr(r->path + 8, '/'))
			return kiln_xstrdup(r->path + 8);
		/* "docker.io/a.b/c" must stay: "a.b/c" would name the registry a.b */
		const char *slash = strchr(r->path, '/');
		size_t fl = slash ? (size_t)(slash - r->path) : 0;
		bool hostlike = slash && (memchr(r->path, '.', fl) || memchr(r->path, ':', fl) ||
					  (fl == 9 && !strncmp(r->path, "localhost", 9)));
		if (!hostlike)
			return kiln_xstrdup(r->path);
	}
	return kiln_ref_repo(r);
}

static char *ref_format(const struct kiln_ref *r, char *repo)
{
	char *s = kiln_xasprintf("%s%s%s%s%s", repo, r->tag ? ":" : "", r->tag ? r->tag : "",
				 r->digest ? "@" : "", r->digest ? r->digest : "");
	free(repo);
	return s;
}

char *kiln_ref_string(const struct kiln_ref *r)
{
	return ref_format(r, kiln_ref_repo(r));
}

char *kiln_ref_familiar(const struct kiln_ref *r)
{
	return ref_format(r, kiln_ref_familiar_repo(r));
}

char *kiln_ref_normalize(const char *s, struct kiln_err *err)
{
	struct kiln_ref r;
	if (kiln_ref_parse(s, &r, err) < 0)
		return NULL;
	char *out = kiln_ref_string(&r);
	kiln_ref_free(&r);
	return out;
}

char *kiln_ref_familiarize(const char *s)
{
	struct kiln_ref r;
	struct kiln_err e = {0};
	if (kiln_ref_parse(s, &r, &e) < 0)
		return kiln_xstrdup(s);
	char *out = kiln_ref_familiar(&r);
	kiln_ref_free(&r);
	return out;
}

/* ---------------------------------------------------------------- chain ids */

void kiln_chain_id_next(const char *parent, const char *diff_id, char out[KILN_DIGEST_MAX])
{
	if (!parent || !*parent) {
		snprintf(out, KILN_DIGEST_MAX, "%s", diff_id);
		return;
	}
	char *s = kiln_xasprintf("%s %s", parent, diff_id);
	kiln_digest_data(s, strlen(s), out);
	free(s);
}

char **kiln_image_chain_ids(const struct kiln_image *img)
{
	char **v = kiln_xcalloc(img->n_layers + 1, sizeof(char *));
	char cur[KILN_DIGEST_MAX] = "";
	for (size_t i = 0; i < img->n_layers; i++) {
		char next[KILN_DIGEST_MAX];
		kiln_chain_id_next(cur, img->layers[i].diff_id, next);
		memcpy(cur, next, sizeof(cur));
		v[i] = kiln_xstrdup(cur);
	}
	return v;
}

void kiln_image_top_chain_id(const struct kiln_image *img, char out[KILN_DIGEST_MAX])
{
	out[0] = '\0';
	for (size_t i = 0; i < img->n_layers; i++) {
		char next[KILN_DIGEST_MAX];
		kiln_chain_id_next(out, img->layers[i].diff_id, next);
		memcpy(out, next, KILN_DIGEST_MAX);
	}
}

/* ---------------------------------------------------------------- JSON */

char *kiln_json_canonical(const json_t *j)
{
	char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
	if (!s) {
		fprintf(stderr, "kiln: out of memory encoding JSON\n");
		abort();
	}
	return s;
}

const char *kiln_host_arch(void)
{
	struct utsname u;
	if (uname(&u) < 0)
		return "amd64";
	static const struct { const char *m, *go; } map[] = {
		{"x86_64", "amd64"}, {"aarch64", "arm64"}, {"armv7l", "arm"}, {"armv6l", "arm"},
		{"i686", "386"}, {"i386", "386"}, {"ppc64le", "ppc64le"}, {"s390x", "s390x"},
		{"riscv64", "riscv64"}, {"mips64", "mips64"},
	};
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		if (!strcmp(u.machine, map[i].m))
			return map[i].go;
	return "amd64";
}

int kiln_desc_from_json(const json_t *j, struct kiln_desc *out, struct kiln_err *err)
{
	memset(out, 0, sizeof(*out));
	if (!json_is_object(j))
		return kiln_err_set(err, 0, "descriptor is not an object");
	const char *mt = json_string_value(json_object_get(j, "mediaType"));
	const char *dg = json_string_value(json_object_get(j, "digest"));
	json_t *sz = json_object_get(j, "size");
	if (!mt || !*mt || strlen(mt) >= sizeof(out->media_type))
		return kiln_err_set(err, 0, "descriptor has no valid mediaType");
	if (!kiln_digest_valid(dg))
		return kiln_err_set(err, 0, "descriptor has an invalid digest \"%s\"", dg ? dg : "");
	if (!json_is_integer(sz) || json_integer_value(sz) < 0)
		return kiln_err_set(err, 0, "descriptor %s has an invalid size", dg);
	snprintf(out->media_type, sizeof(out->media_type), "%s", mt);
	snprintf(out->digest, sizeof(out->digest), "%s", dg);
	out->size = json_integer_value(sz);
	return 0;
}

json_t *kiln_desc_to_json(const struct kiln_desc *d)
{
	return json_pack("{s:s, s:s, s:I}", "mediaType", d->media_type, "digest", d->digest, "size",
			 (json_int_t)d->size);
}

static bool is_manifest_mt(const char *mt)
{
	return !strcmp(mt, KILN_MT_OCI_MANIFEST) || !strcmp(mt, KILN_MT_DOCKER_MANIFEST);
}

static bool is_index_mt(const char *mt)
{
	return !strcmp(mt, KILN_MT_OCI_INDEX) || !strcmp(mt, KILN_MT_DOCKER_LIST);
}

static bool is_layer_mt(const char *mt)
{
	static const char *const ok[] = {
		KILN_MT_LAYER_TAR, KILN_MT_LAYER_GZIP, KILN_MT_LAYER_ZSTD, KILN_MT_DOCKER_LAYER_GZIP,
		KILN_MT_DOCKER_LAYER_FOREIGN, "application/vnd.docker.image.rootfs.diff.tar",
		"application/vnd.oci.image.layer.nondistributable.v1.tar",
		"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
		"application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		if (!strcmp(mt, ok[i]))
			return true;
	return false;
}

static bool is_config_mt(const char *mt)
{
	return !strcmp(mt, KILN_MT_OCI_CONFIG) || !strcmp(mt, KILN_MT_DOCKER_CONFIG);
}

static int load_object(const char *data, size_t len, const char *what, json_t **out, struct kiln_err *err)
{
	json_error_t je;
	json_t *j = json_loadb(data, len, JSON_REJECT_DUPLICATES, &je);
	if (!j)
		return kiln_err_set(err, 0, "%s is not valid JSON: %s (line %d)", what, je.text, je.line);
	if (!json_is_object(j)) {
		json_decref(j);
		return kiln_err_set(err, 0, "%s is not a JSON object", what);
	}
	*out = j;
	return 0;
}

int kiln_manifest_parse(const char *data, size_t len, const char *media_type, json_t **out,
			struct kiln_err *err)
{
	*out = NULL;
	json_t *j;
	if (load_object(data, len, "manifest", &j, err) < 0)
		return -1;
	json_t *sv = json_object_get(j, "schemaVersion");
	const char *mt = json_string_value(json_object_get(j, "mediaType"));
	struct kiln_desc d;
	if (!json_is_integer(sv) || json_integer_value(sv) != 2) {
		kiln_err_set(err, 0, "manifest schemaVersion is not 2");
		goto bad;
	}
	if (json_object_get(j, "mediaType") && !mt) {
		kiln_err_set(err, 0, "manifest mediaType is not a string");
		goto bad;
	}
	if (mt && !is_manifest_mt(mt)) {
		kiln_err_set(err, 0, "unsupported manifest mediaType \"%s\"", mt);
		goto bad;
	}
	if (media_type && !is_manifest_mt(media_type)) {
		kiln_err_set(err, 0, "unsupported manifest mediaType \"%s\"", media_type);
		goto bad;
	}
	if (mt && media_type && strcmp(mt, media_type)) {
		kiln_err_set(err, 0, "manifest mediaType \"%s\" differs from its descriptor's \"%s\"", mt,
			     media_type);
		goto bad;
	}
	if (json_object_get(j, "manifests")) {
		kiln_err_set(err, 0, "manifest has a \"manifests\" member (ambiguous with an index)");
		goto bad;
	}
	if (kiln_desc_from_json(json_object_get(j, "config"), &d, err) < 0) {
		kiln_err_wrap(err, "manifest config");
		goto bad;
	}
	json_t *layers = json_object_get(j, "layers");
	if (!json_is_array(layers)) {
		kiln_err_set(err, 0, "manifest has no layers array");
		goto bad;
	}
	size_t i;
	json_t *x;
	json_array_foreach(layers, i, x) {
		if (kiln_desc_from_json(x, &d, err) < 0) {
			kiln_err_wrap(err, "manifest layer %zu", i);
			goto bad;
		}
		if (!is_layer_mt(d.media_type)) {
			kiln_err_set(err, 0, "manifest layer %zu: unsupported mediaType \"%s\"", i, d.media_type);
			goto bad;
		}
	}
	*out = j;
	return 0;
bad:
	json_decref(j);
	return -1;
}

int kiln_index_parse(const char *data, size_t len, json_t **out, struct kiln_err *err)
{
	*out = NULL;
	json_t *j;
	if (load_object(data, len, "image index", &j, err) < 0)
		return -1;
	json_t *sv = json_object_get(j, "schemaVersion");
	const char *mt = json_string_value(json_object_get(j, "mediaType"));
	if (!json_is_integer(sv) || json_integer_value(sv) != 2) {
		kiln_err_set(err, 0, "image index schemaVersion is not 2");
		goto bad;
	}
	if (mt && !is_index_mt(mt)) {
		kiln_err_set(err, 0, "unsupported image index mediaType \"%s\"", mt);
		goto bad;
	}
	if (json_object_get(j, "layers") || json_object_get(j, "config")) {
		kiln_err_set(err, 0, "image index has layers or config (ambiguous with a manifest)");
		goto bad;
	}
	json_t *m = json_object_get(j, "manifests");
	if (!json_is_array(m)) {
		kiln_err_set(err, 0, "image index has no manifests array");
		goto bad;
	}
	size_t i;
	json_t *x;
	json_array_foreach(m, i, x) {
		struct kiln_desc d;
		if (kiln_desc_from_json(x, &d, err) < 0) {
			kiln_err_wrap(err, "image index entry %zu", i);
			goto bad;
		}
	}
	*out = j;
	return 0;
bad:
	json_decref(j);
	return -1;
}

/* ---------------------------------------------------------------- images */

char *kiln_image_now(void)
{
	const char *sde = getenv("SOURCE_DATE_EPOCH");
	time_t t;
	if (sde && *sde) {
		char *end;
		long long v = strtoll(sde, &end, 10);
		t = (*end || v < 0) ? time(NULL) : (time_t)v;
	} else {
		t = time(NULL);
	}
	struct tm tm;
	gmtime_r(&t, &tm);
	char buf[64];
	strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
	return kiln_xstrdup(buf);
}

void kiln_image_free(struct kiln_image *img)
{
	if (!img)
		return;
	json_decref(img->config);
	json_decref(img->manifest_json);
	free(img->layers);
	free(img);
}

struct kiln_image *kiln_image_new_scratch(void)
{
	struct kiln_image *img = kiln_xcalloc(1, sizeof(*img));
	char *now = kiln_image_now();
	img->config = json_pack("{s:s, s:s, s:s, s:{}, s:{s:s, s:[]}, s:[]}", "architecture", kiln_host_arch(),
				"os", "linux", "created", now, "config", "rootfs", "type", "layers", "diff_ids",
				"history");
	free(now);
	return img;
}

struct kiln_image *kiln_image_copy(const struct kiln_image *src)
{
	struct kiln_image *img = kiln_xcalloc(1, sizeof(*img));
	img->config = json_deep_copy(src->config);
	json_object_del(img->config, "created");
	img->n_layers = src->n_layers;
	img->layers = kiln_xcalloc(src->n_layers + 1, sizeof(*img->layers));
	if (src->n_layers)
		memcpy(img->layers, src->layers, src->n_layers * sizeof(*img->layers));
	return img;
}

static int select_platform(struct kiln_store *s, const char *data, size_t len, struct kiln_desc *out,
			   struct kiln_err *err)
{
	json_t *idx;
	if (kiln_index_parse(data, len, &idx, err) < 0)
		return -1;
	const char *arch = kiln_host_arch();
	size_t i;
	json_t *x;
	int rc = -1;
	json_array_foreach(json_object_get(idx, "manifests"), i, x) {
		struct kiln_desc d;
		if (kiln_desc_from_json(x, &d, err) < 0 || !is_manifest_mt(d.media_type))
			continue;
		json_t *p = json_object_get(x, "platform");
		const char *os = json_string_value(json_object_get(p, "os"));
		const char *ar = json_string_value(json_object_get(p, "architecture"));
		bool match = p ? (os && ar && !strcmp(os, "linux") && !strcmp(ar, arch)) : true;
		if (match && kiln_store_blob_exists(s, d.digest)) {
			*out = d;
			rc = 0;
			break;
		}
	}
	json_decref(idx);
	if (rc < 0)
		kiln_err_set(err, ENOENT, "the image index has no linux/%s manifest in the store", arch);
	return rc;
}

int kiln_image_load_desc(struct kiln_store *s, const struct kiln_desc *manifest, struct kiln_image **out,
			 struct kiln_err *err)
{
	*out = NULL;
	struct kiln_desc md = *manifest;
	char *data = NULL;
	size_t len;
	for (int depth = 0;; depth++) {
		if (kiln_store_blob_read(s, md.digest, JSON_BLOB_MAX, &data, &len, err) < 0)
			return kiln_err_wrap(err, "manifest");
		if (!is_index_mt(md.media_type))
			break;
		struct kiln_desc sub;
		int rc = depth < 2 ? select_platform(s, data, len, &sub, err) :
				     kiln_err_set(err, 0, "nested image indexes");
		free(data);
		data = NULL;
		if (rc < 0)
			return -1;
		md = sub;
	}
	json_t *mj = NULL;
	if (kiln_manifest_parse(data, len, md.media_type, &mj, err) < 0) {
		free(data);
		return kiln_err_wrap(err, "manifest %s", md.digest);
	}
	free(data);
	struct kiln_desc cd;
	kiln_desc_from_json(json_object_get(mj, "config"), &cd, err);
	if (!is_config_mt(cd.media_type)) {
		json_decref(mj);
		return kiln_err_set(err, 0, "manifest %s: unsupported config mediaType \"%s\"", md.digest,
				    cd.media_type);
	}
	char *cdata;
	size_t clen;
	if (kiln_store_blob_read(s, cd.digest, JSON_BLOB_MAX, &cdata, &clen, err) < 0) {
		json_decref(mj);
		return kiln_err_wrap(err, "image config");
	}
	json_t *cfg;
	int rc = load_object(cdata, clen, "image config", &cfg, err);
	free(cdata);
	if (rc < 0) {
		json_decref(mj);
		return -1;
	}
	json_t *layers = json_object_get(mj, "layers");
	json_t *diff_ids = json_object_get(json_object_get(cfg, "rootfs"), "diff_ids");
	if (!json_is_array(diff_ids) || json_array_size(diff_ids) != json_array_size(layers)) {
		json_decref(mj);
		json_decref(cfg);
		return kiln_err_set(err, 0, "image config %s: rootfs.diff_ids does not match the manifest's %zu layers",
				    cd.digest, json_array_size(layers));
	}
	struct kiln_image *img = kiln_xcalloc(1, sizeof(*img));
	img->config = cfg;
	img->manifest_json = mj;
	img->manifest = md;
	memcpy(img->id, cd.digest, sizeof(img->id));
	img->n_layers = json_array_size(layers);
	img->layers = kiln_xcalloc(img->n_layers + 1, sizeof(*img->layers));
	for (size_t i = 0; i < img->n_layers; i++) {
		struct kiln_desc ld;
		kiln_desc_from_json(json_array_get(layers, i), &ld, err);
		const char *did = json_string_value(json_array_get(diff_ids, i));
		if (!kiln_digest_valid(did)) {
			kiln_image_free(img);
			return kiln_err_set(err, 0, "image config %s: diff_id %zu is invalid", cd.digest, i);
		}
		struct kiln_image_layer *l = &img->layers[i];
		memcpy(l->digest, ld.digest, sizeof(l->digest));
		snprintf(l->diff_id, sizeof(l->diff_id), "%s", did);
		l->size = ld.size;
		snprintf(l->media_type, sizeof(l->media_type), "%s", ld.media_type);
	}
	*out = img;
	return 0;
}

/* Config digest of a manifest entry ("" when unreadable). */
static void entry_config_digest(struct kiln_store *s, const struct kiln_desc *md, char out[KILN_DIGEST_MAX])
{
	out[0] = '\0';
	struct kiln_desc d = *md;
	struct kiln_err e = {0};
	char *data;
	size_t len;
	if (is_index_mt(d.media_type)) {
		if (kiln_store_blob_read(s, d.digest, JSON_BLOB_MAX, &data, &len, &e) < 0)
			return;
		int rc = select_platform(s, data, len, &d, &e);
		free(data);
		if (rc < 0)
			return;
	}
	if (kiln_store_blob_read(s, d.digest, JSON_BLOB_MAX, &data, &len, &e) < 0)
		return;
	json_t *j = json_loadb(data, len, 0, NULL);
	free(data);
	const char *c = json_string_value(json_object_get(json_object_get(j, "config"), "digest"));
	if (kiln_digest_valid(c))
		snprintf(out, KILN_DIGEST_MAX, "%s", c);
	json_decref(j);
}

static bool all_hex(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
			return false;
	return true;
}

int kiln_image_resolve(struct kiln_store *s, const char *name, struct kiln_desc *manifest,
		       char id[KILN_DIGEST_MAX], struct kiln_err *err)
{
	if (!name || !*name)
		return kiln_err_set(err, 0, "no image name given");
	struct kiln_tag *tags = NULL;
	size_t n = 0;
	const char *hex = kiln_str_has_prefix(name, "sha256:") ? name + 7 : name;
	bool idlike = all_hex(hex) && strlen(hex) <= 64 && (hex != name || strlen(hex) >= 4);
	/* 1. a name (docker tries the reference first, except for 64-hex strings) */
	if (!(idlike && (hex != name || strlen(hex) == 64))) {
		struct kiln_ref r;
		struct kiln_err e = {0};
		if (kiln_ref_parse(name, &r, &e) == 0) {
			int rc = -1;
			if (r.digest) {
				/* name@digest: an image with that manifest digest in the store */
				if (kiln_store_tag_list(s, &tags, &n, err) < 0) {
					kiln_ref_free(&r);
					return -1;
				}
				for (size_t i = 0; i < n; i++)
					if (!strcmp(tags[i].desc.digest, r.digest)) {
						*manifest = tags[i].desc;
						rc = 0;
						break;
					}
				kiln_store_tags_free(tags, n);
				tags = NULL;
			} else {
				rc = kiln_store_tag_get(s, name, manifest, &e);
				if (rc < 0 && e.errnum != ENOENT) {
					*err = e;
					kiln_ref_free(&r);
					return -1;
				}
			}
			kiln_ref_free(&r);
			if (rc == 0) {
				entry_config_digest(s, manifest, id);
				return 0;
			}
		} else if (!idlike) {
			*err = e;
			return -1;
		}
	}
	/* 2. an image id (config digest) or manifest digest, full or a unique prefix */
	if (idlike) {
		if (kiln_store_tag_list(s, &tags, &n, err) < 0)
			return -1;
		size_t hl = strlen(hex);
		int found = -1;
		char found_id[KILN_DIGEST_MAX] = "";
		for (size_t i = 0; i < n; i++) {
			char cid[KILN_DIGEST_MAX];
			entry_config_digest(s, &tags[i].desc, cid);
			bool hit = (cid[0] && !strncmp(cid + 7, hex, hl)) ||
				   (hl == 64 && !strcmp(tags[i].desc.digest + 7, hex));
			if (!hit)
				continue;
			if (found >= 0 && strcmp(found_id, cid)) {
				kiln_store_tags_free(tags, n);
				return kiln_err_set(err, 0, "image id prefix %s is ambiguous", name);
			}
			if (found < 0) {
				found = (int)i;
				memcpy(found_id, cid, sizeof(found_id));
			}
		}
		if (found >= 0) {
			*manifest = tags[found].desc;
			memcpy(id, found_id, KILN_DIGEST_MAX);
			kiln_store_tags_free(tags, n);
			return 0;
		}
		kiln_store_tags_free(tags, n);
	}
	kiln_err_set(err, 0, "No such image: %s", name);
	err->errnum = ENOENT;
	return -1;
}

int kiln_image_load(struct kiln_store *s, const char *name_or_id, struct kiln_image **out, struct kiln_err *err)
{
	*out = NULL;
	struct kiln_desc md;
	char id[KILN_DIGEST_MAX];
	if (kiln_image_resolve(s, name_or_id, &md, id, err) < 0)
		return -1;
	if (kiln_image_load_desc(s, &md, out, err) < 0)
		return kiln_err_wrap(err, "image %s", name_or_id);
	return 0;
}

/* ---------------------------------------------------------------- config editing */

json_t *kiln_image_cfg(struct kiln_image *img)
{
	if (!img->config)
		img->config = json_object();
	json_t *c = json_object_get(img->config, "config");
	if (!json_is_object(c)) {
		c = json_object();
		json_object_set_new(img->config, "config", c);
	}
	return c;
}

const char *kiln_image_get_string(struct kiln_image *img, const char *key)
{
	return json_string_value(json_object_get(kiln_image_cfg(img), key));
}

void kiln_image_set_string(struct kiln_image *img, const char *key, const char *value)
{
	if (value)
		json_object_set_new(kiln_image_cfg(img), key, json_string(value));
	else
		json_object_del(kiln_image_cfg(img), key);
}

char **kiln_image_get_strv(struct kiln_image *img, const char *key)
{
	json_t *a = json_object_get(kiln_image_cfg(img), key);
	if (!json_is_array(a))
		return NULL;
	char **v = kiln_xcalloc(json_array_size(a) + 1, sizeof(char *));
	size_t i, k = 0;
	json_t *x;
	json_array_foreach(a, i, x)
		if (json_is_string(x))
			v[k++] = kiln_xstrdup(json_string_value(x));
	return v;
}

void kiln_image_set_strv(struct kiln_image *img, const char *key, char *const *v)
{
	if (!v) {
		json_object_del(kiln_image_cfg(img), key);
		return;
	}
	json_t *a = json_array();
	for (size_t i = 0; v[i]; i++)
		json_array_append_new(a, json_string(v[i]));
	json_object_set_new(kiln_image_cfg(img), key, a);
}

static json_t *cfg_array(struct kiln_image *img, const char *key)
{
	json_t *c = kiln_image_cfg(img);
	json_t *a = json_object_get(c, key);
	if (!json_is_array(a)) {
		a = json_array();
		json_object_set_new(c, key, a);
	}
	return a;
}

static json_t *cfg_object(struct kiln_image *img, const char *key)
{
	json_t *c = kiln_image_cfg(img);
	json_t *o = json_object_get(c, key);
	if (!json_is_object(o)) {
		o = json_object();
		json_object_set_new(c, key, o);
	}
	return o;
}

void kiln_image_env_set(struct kiln_image *img, const char *name, const char *value)
{
	json_t *env = cfg_array(img, "Env");
	size_t nl = strlen(name);
	char *kv = kiln_xasprintf("%s=%s", name, value ? value : "");
	size_t i;
	json_t *x;
	json_array_foreach(env, i, x) {
		const char *e = json_string_value(x);
		if (e && !strncmp(e, name, nl) && e[nl] == '=') {
			json_array_set_new(env, i, json_string(kv));
			free(kv);
			return;
		}
	}
	json_array_append_new(env, json_string(kv));
	free(kv);
}

const char *kiln_image_env_get(struct kiln_image *img, const char *name)
{
	json_t *env = json_object_get(kiln_image_cfg(img), "Env");
	size_t nl = strlen(name);
	size_t i;
	json_t *x;
	json_array_foreach(env, i, x) {
		const char *e = json_string_value(x);
		if (e && !strncmp(e, name, nl) && e[nl] == '=')
			return e + nl + 1;
	}
	return NULL;
}

void kiln_image_label_set(struct kiln_image *img, const char *key, const char *value)
{
	json_object_set_new(cfg_object(img, "Labels"), key, json_string(value ? value : ""));
}

void kiln_image_expose(struct kiln_image *img, const char *port_proto)
{
	char *p = strchr(port_proto, '/') ? kiln_xstrdup(port_proto) : kiln_xasprintf("%s/tcp", port_proto);
	json_object_set_new(cfg_object(img, "ExposedPorts"), p, json_object());
	free(p);
}

void kiln_image_volume_add(struct kiln_image *img, const char *path)
{
	json_object_set_new(cfg_object(img, "Volumes"), path, json_object());
}

void kiln_image_set_healthcheck(struct kiln_image *img, json_t *hc)
{
	if (hc)
		json_object_set_new(kiln_image_cfg(img), "Healthcheck", hc);
	else
		json_object_del(kiln_image_cfg(img), "Healthcheck");
}

/* ---------------------------------------------------------------- layers, history */

static json_t *history_array(struct kiln_image *img)
{
	json_t *h = json_object_get(img->config, "history");
	if (!json_is_array(h)) {
		h = json_array();
		json_object_set_new(img->config, "history", h);
	}
	return h;
}

static json_t *history_entry(const char *created_by, const char *comment, bool empty_layer)
{
	char *now = kiln_image_now();
	json_t *e = json_pack("{s:s}", "created", now);
	free(now);
	if (created_by)
		json_object_set_new(e, "created_by", json_string(created_by));
	if (comment)
		json_object_set_new(e, "comment", json_string(comment));
	if (empty_layer)
		json_object_set_new(e, "empty_layer", json_true());
	return e;
}

void kiln_image_add_history(struct kiln_image *img, const char *created_by, const char *comment, bool empty_layer)
{
	if (!img->config)
		img->config = json_object();
	json_array_append_new(history_array(img), history_entry(created_by, comment, empty_layer));
}

static void append_layer(struct kiln_image *img, const char *digest, const char *diff_id, int64_t size,
			 const char *mt)
{
	img->layers = kiln_xrealloc(img->layers, (img->n_layers + 1) * sizeof(*img->layers));
	struct kiln_image_layer *l = &img->layers[img->n_layers++];
	memset(l, 0, sizeof(*l));
	snprintf(l->digest, sizeof(l->digest), "%s", digest);
	snprintf(l->diff_id, sizeof(l->diff_id), "%s", diff_id);
	l->size = size;
	snprintf(l->media_type, sizeof(l->media_type), "%s", mt);
}

int kiln_image_add_layer(struct kiln_image *img, const struct kiln_layer_info *layer, const char *created_by,
			 const char *comment, struct kiln_err *err)
{
	if (!kiln_digest_valid(layer->digest) || !kiln_digest_valid(layer->diff_id))
		return kiln_err_set(err, 0, "layer has an invalid digest or diff_id");
	if (!img->config)
		img->config = json_object();
	append_layer(img, layer->digest, layer->diff_id, layer->size,
		     layer->media_type ? layer->media_type : KILN_MT_LAYER_GZIP);
	kiln_image_add_history(img, created_by, comment, false);
	return 0;
}

int64_t kiln_image_size(const struct kiln_image *img)
{
	int64_t t = 0;
	for (size_t i = 0; i < img->n_layers; i++)
		t += img->layers[i].size;
	return t;
}

static const char *oci_layer_mt(const char *mt)
{
	if (!strcmp(mt, KILN_MT_DOCKER_LAYER_GZIP))
		return KILN_MT_LAYER_GZIP;
	if (!strcmp(mt, "application/vnd.docker.image.rootfs.diff.tar"))
		return KILN_MT_LAYER_TAR;
	return mt;
}

int kiln_image_commit(struct kiln_store *s, struct kiln_image *img, const char *const *tags,
		      char out_id[KILN_DIGEST_MAX], struct kiln_err *err)
{
	if (!img->config)
		img->config = json_object();
	if (!json_object_get(img->config, "architecture"))
		json_object_set_new(img->config, "architecture", json_string(kiln_host_arch()));
	if (!json_object_get(img->config, "os"))
		json_object_set_new(img->config, "os", json_string("linux"));
	if (!json_is_string(json_object_get(img->config, "created"))) {
		char *now = kiln_image_now();
		json_object_set_new(img->config, "created", json_string(now));
		free(now);
	}
	kiln_image_cfg(img);
	if (img->n_layers == 0) {
		/* the schema wants a layer: the empty tar (1024 zero bytes) */
		static const char zeros[1024];
		char dg[KILN_DIGEST_MAX];
		if (kiln_store_blob_put(s, zeros, sizeof(zeros), dg, err) < 0)
			return kiln_err_wrap(err, "empty layer");
		append_layer(img, dg, KILN_EMPTY_LAYER_DIFF_ID, sizeof(zeros), KILN_MT_LAYER_TAR);
		json_array_insert_new(history_array(img), 0,
				      history_entry(NULL, "kiln: empty layer (an image needs one)", false));
	}
	json_t *diff_ids = json_array();
	for (size_t i = 0; i < img->n_layers; i++) {
		if (!kiln_store_blob_exists(s, img->layers[i].digest)) {
			json_decref(diff_ids);
			return kiln_err_set(err, ENOENT, "layer %s is not in the store", img->layers[i].digest);
		}
		json_array_append_new(diff_ids, json_string(img->layers[i].diff_id));
	}
	json_object_set_new(img->config, "rootfs", json_pack("{s:s, s:o}", "type", "layers", "diff_ids", diff_ids));

	char *ctext = kiln_json_canonical(img->config);
	char cdg[KILN_DIGEST_MAX];
	int rc = kiln_store_blob_put(s, ctext, strlen(ctext), cdg, err);
	size_t clen = strlen(ctext);
	free(ctext);
	if (rc < 0)
		return kiln_err_wrap(err, "image config");
	json_t *layers = json_array();
	for (size_t i = 0; i < img->n_layers; i++) {
		struct kiln_image_layer *l = &img->layers[i];
		char mt[sizeof(l->media_type)];
		snprintf(mt, sizeof(mt), "%s", oci_layer_mt(l->media_type));
		memcpy(l->media_type, mt, sizeof(mt));
		json_array_append_new(layers, json_pack("{s:s, s:s, s:I}", "mediaType", l->media_type, "digest",
							l->digest, "size", (json_int_t)l->size));
	}
	json_t *mj = json_pack("{s:i, s:s, s:{s:s, s:s, s:I}, s:o}", "schemaVersion", 2, "mediaType",
			       KILN_MT_OCI_MANIFEST, "config", "mediaType", KILN_MT_OCI_CONFIG, "digest", cdg,
			       "size", (json_int_t)clen, "layers", layers);
	char *mtext = kiln_json_canonical(mj);
	struct kiln_desc md;
	snprintf(md.media_type, sizeof(md.media_type), "%s", KILN_MT_OCI_MANIFEST);
	md.size = (int64_t)strlen(mtext);
	rc = kiln_store_blob_put(s, mtext, strlen(mtext), md.digest, err);
	free(mtext);
	if (rc < 0) {
		json_decref(mj);
		return kiln_err_wrap(err, "image manifest");
	}
	json_decref(img->manifest_json);
	img->manifest_json = mj;
	img->manifest = md;
	memcpy(img->id, cdg, sizeof(img->id));
	size_t ntags = 0;
	for (; tags && tags[ntags]; ntags++)
		if (kiln_store_tag_set(s, tags[ntags], &md, err) < 0)
			return kiln_err_wrap(err, "tag %s", tags[ntags]);
	if (ntags == 0 && kiln_store_index_add_untagged(s, &md, err) < 0)
		return -1;
	if (out_id)
		memcpy(out_id, cdg, KILN_DIGEST_MAX);
	return 0;
}

/* ---------------------------------------------------------------- display helpers */

void kiln_human_size(int64_t bytes, char buf[32])
{
	kiln_units_format_decimal(bytes, 3, buf);
}

static int64_t parse_rfc3339(const char *s)
{
	struct tm tm;
	memset(&tm, 0, sizeof(tm));
	const char *p = s ? strptime(s, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;
	if (!p)
		return -1;
	int64_t t = (int64_t)timegm(&tm);
	if (*p == '.')
		for (p++; *p >= '0' && *p <= '9'; p++)
			;
	if (*p == '+' || *p == '-') {
		int hh = 0, mm = 0;
		if (sscanf(p + 1, "%d:%d", &hh, &mm) >= 1)
			t -= (*p == '+' ? 1 : -1) * (int64_t)(hh * 3600 + mm * 60);
	}
	return t;
}

void kiln_human_since(const char *rfc3339, char buf[64])
{
	int64_t t = parse_rfc3339(rfc3339);
	if (t < 0) {
		snprintf(buf, 64, "N/A");
		return;
	}
	int64_t d = (int64_t)time(NULL) - t;
	if (d < 0)
		d = 0;
	/* the wording of go-units HumanDuration */
	if (d < 1)
		snprintf(buf, 64, "Less than a second ago");
	else if (d == 1)
		snprintf(buf, 64, "1 second ago");
	else if (d < 60)
		snprintf(buf, 64, "%lld seconds ago", (long long)d);
	else if (d / 60 == 1)
		snprintf(buf, 64, "About a minute ago");
	else if (d / 60 < 60)
		snprintf(buf, 64, "%lld minutes ago", (long long)(d / 60));
	else if ((d + 1800) / 3600 == 1)
		snprintf(buf, 64, "About an hour ago");
	else if (d / 3600 < 48)
		snprintf(buf, 64, "%lld hours ago", (long long)((d + 1800) / 3600));
	else if (d / 3600 < 24 * 7 * 2)
		snprintf(buf, 64, "%lld days ago", (long long)(d / 86400));
	else if (d / 3600 < 24 * 30 * 2)
		snprintf(buf, 64, "%lld weeks ago", (long long)(d / (86400 * 7)));
	else if (d / 3600 < 24 * 365 * 2)
		snprintf(buf, 64, "%lld months ago", (long long)(d / (86400 * 30)));
	else
		snprintf(buf, 64, "%lld years ago", (long long)(d / (86400 * 365)));
}

void kiln_short_id(const char *digest, char buf[16])
{
	const char *h = digest && !strncmp(digest, "sha256:", 7) ? digest + 7 : (digest ? digest : "");
	snprintf(buf, 16, "%.12s", h);
}

/* ---------------------------------------------------------------- listing */

int kiln_image_list(struct kiln_store *s, struct kiln_image_entry **out, size_t *n, struct kiln_err *err)
{
	*out = NULL;
	*n = 0;
	struct kiln_tag *tags;
	size_t nt;
	if (kiln_store_tag_list(s, &tags, &nt, err) < 0)
		return -1;
	struct kiln_image_entry *v = kiln_xcalloc(nt + 1, sizeof(*v));
	size_t k = 0;
	for (size_t i = 0; i < nt; i++) {
		struct kiln_image *img = NULL;
		struct kiln_err e = {0};
		char id[KILN_DIGEST_MAX] = "";
		bool broken = kiln_image_load_desc(s, &tags[i].desc, &img, &e) < 0;
		if (!broken)
			memcpy(id, img->id, sizeof(id));
		else
			snprintf(id, sizeof(id), "%s", tags[i].desc.digest);
		size_t j;
		for (j = 0; j < k; j++)
			if (!strcmp(v[j].id, id))
				break;
		if (j == k) {
			memcpy(v[k].id, id, sizeof(v[k].id));
			v[k].manifest = tags[i].desc;
			v[k].broken = broken;
			if (img) {
				const char *c = json_string_value(json_object_get(img->config, "created"));
				v[k].created = c ? kiln_xstrdup(c) : NULL;
				v[k].size = kiln_image_size(img);
			}
			k++;
		}
		if (tags[i].ref)
			kiln_strv_push(&v[j].refs, tags[i].ref);
		kiln_image_free(img);
	}
	kiln_store_tags_free(tags, nt);
	*out = v;
	*n = k;
	return 0;
}

void kiln_image_list_free(struct kiln_image_entry *v, size_t n)
{
	if (!v)
		return;
	for (size_t i = 0; i < n; i++) {
		kiln_strv_free(&v[i].refs);
		free(v[i].created);
	}
	free(v);
}

void kiln_image_ids_in_use(struct kiln_store *s, struct kiln_strv *ids)
{
	int cfd = openat(kiln_store_dirfd(s), "containers", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cfd < 0)
		return;
	DIR *d = fdopendir(cfd);
	if (!d) {
		close(cfd);
		return;
	}
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		char *rel = kiln_xasprintf("%s/state.json", de->d_name);
		int fd = openat(dirfd(d), rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		free(rel);
		if (fd < 0)
			continue;
		char *data;
		size_t len;
		struct kiln_err e = {0};
		int rc = kiln_read_fd(fd, 1 << 20, &data, &len, &e);
		close(fd);
		if (rc < 0)
			continue;
		json_t *j = json_loadb(data, len, 0, NULL);
		free(data);
		static const char *const keys[] = {"image_id", "ImageID", "Image", "image"};
		for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
			const char *name = json_string_value(json_object_get(j, keys[k]));
			struct kiln_desc md;
			char id[KILN_DIGEST_MAX];
			if (name && *name && kiln_image_resolve(s, name, &md, id, &e) == 0 && id[0]) {
				kiln_strv_push(ids, id);
				break;
			}
		}
		json_decref(j);
	}
	closedir(d);
}
