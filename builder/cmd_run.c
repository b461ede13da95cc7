/* kiln run — run a command in a new container (docker's flags, plus
 * podman's --rootfs DIR to run a plain directory). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "builder/cli.h"
#include "builder/run_opts.h"
#include "common/units.h"
#include "common/util.h"
#include "layers/image.h"
#include "layers/snapshot.h"
#include "layers/store.h"
#include "runtime/container.h"
#include "runtime/logrelay.h"
#include "runtime/sandbox.h"

/* Parsed `kiln run` options (also used by the unit tests). */
struct kiln_run_opts {
	bool detach, interactive, tty, rm, privileged, read_only, init, no_new_privs;
	bool entrypoint_set;
	bool help;
	const char *name, *workdir, *user, *entrypoint, *network, *hostname, *rootfs;
	const char *seccomp_file;
	enum kiln_seccomp_mode seccomp;
	struct kiln_strv env, env_files, ports, volumes, tmpfs, cap_add, cap_drop;
	int64_t memory, memory_swap, cpu_shares, pids;
	int64_t nano_cpus;
	uint32_t userns_uid, userns_size;   /* --uidmap 0:HOST:SIZE */
	const char *image;
	char **cmd;          /* points into argv */
	int n_cmd;
	struct kiln_strv log_opts;   /* --log-opt, checked when the container is created */
	struct kiln_strv devices;   /* --device HOST[:CONTAINER][:rwm] */
};

int kiln_run_parse(int argc, char **argv, struct kiln_run_opts *o, struct kiln_err *err);
void kiln_run_opts_free(struct kiln_run_opts *o);
size_t kiln_run_opts_size(void);

/* For the unit test's copy of the struct. */
size_t kiln_run_opts_size(void)
{
	return sizeof(struct kiln_run_opts);
}

void kiln_run_opts_free(struct kiln_run_opts *o)
{
	kiln_strv_free(&o->env);
	kiln_strv_free(&o->env_files);
	kiln_strv_free(&o->ports);
	kiln_strv_free(&o->volumes);
	kiln_strv_free(&o->tmpfs);
	kiln_strv_free(&o->cap_add);
	kiln_strv_free(&o->cap_drop);
	kiln_strv_free(&o->log_opts);
	kiln_strv_free(&o->devices);
}

/* Flags taking a value. */
static const char *const value_flags[] = {"--name", "-e", "--env", "--env-file", "-p", "--publish", "-v",
	"--volume", "--tmpfs", "-w", "--workdir", "-u", "--user", "--entrypoint", "-m", "--memory",
	"--memory-swap", "--cpus", "--cpu-shares", "-c", "--pids-limit", "--network", "--net", "-h",
	"--hostname", "--cap-add", "--cap-drop", "--security-opt", "--rootfs", "--uidmap", "--log-opt", "--device", NULL};

static bool takes_value(const char *f)
{
	for (const char *const *v = value_flags; *v; v++)
		if (!strcmp(*v, f))
			return true;
	return false;
}

static int apply_flag(struct kiln_run_opts *o, const char *f, const char *v, struct kiln_err *err)
{
	if (!strcmp(f, "--name")) {
		/* docker's rule: [a-zA-Z0-9][a-zA-Z0-9_.-]+ */
		bool ok = v[0] && strlen(v) < 128 && ((v[0] >= 'a' && v[0] <= 'z') || (v[0] >= 'A' && v[0] <= 'Z') ||
						   (v[0] >= '0' && v[0] <= '9'));
		for (const char *c = v; ok && *c; c++)
			ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
			     *c == '_' || *c == '.' || *c == '-';
		if (!ok)
			return kiln_err_set(err, 0, "invalid container name \"%s\", only [a-zA-Z0-9][a-zA-Z0-9_.-] "
					    "are allowed", v);
		o->name = v;
	}
	else if (!strcmp(f, "-e") || !strcmp(f, "--env")) {
		if (strchr(v, '=')) {
			kiln_strv_push(&o->env, v);
		} else {
			const char *val = getenv(v);
			if (val)
				kiln_strv_push_owned(&o->env, kiln_xasprintf("%s=%s", v, val));
		}
	} else if (!strcmp(f, "--env-file")) kiln_strv_push(&o->env_files, v);
	else if (!strcmp(f, "-p") || !strcmp(f, "--publish")) {
		struct kiln_port p;
		if (kiln_run_parse_port(v, &p, err) < 0)
			return kiln_units_flag_error(err, "-p, --publish", v);
		free((char *)p.host_ip);
		kiln_strv_push(&o->ports, v);
	}
	else if (!strcmp(f, "-v") || !strcmp(f, "--volume")) {
		if (kiln_run_volume_parse(v, NULL, NULL, NULL, err) < 0)
			return kiln_units_flag_error(err, "-v, --volume", v);
		kiln_strv_push(&o->volumes, v);
	}
	else if (!strcmp(f, "--tmpfs")) {
		if (kiln_run_tmpfs_parse(v, NULL, NULL, err) < 0)
			return kiln_units_flag_error(err, "--tmpfs", v);
		kiln_strv_push(&o->tmpfs, v);
	}
	else if (!strcmp(f, "-w") || !strcmp(f, "--workdir")) {
		/* docker: "the working directory '...' is invalid, it needs to be an absolute path" */
		if (v[0] != '/')
			return kiln_err_set(err, 0, "invalid argument \"%s\" for \"-w, --workdir\" flag: the working "
					    "directory must be an absolute path", v);
		o->workdir = v;
	}
	else if (!strcmp(f, "-u") || !strcmp(f, "--user")) o->user = v;
	else if (!strcmp(f, "--entrypoint")) { o->entrypoint = v; o->entrypoint_set = true; }
	else if (!strcmp(f, "-m") || !strcmp(f, "--memory")) {
		if (kiln_units_parse_memory(v, &o->memory, err) < 0)
			return kiln_units_flag_error(err, "-m, --memory", v);
	}
	else if (!strcmp(f, "--memory-swap")) {
		if (!strcmp(v, "-1")) o->memory_swap = -1;
		else if (kiln_units_parse_bytes(v, &o->memory_swap, err) < 0)
			return kiln_units_flag_error(err, "--memory-swap", v);
	}
	else if (!strcmp(f, "--cpus")) {
		if (kiln_units_parse_cpus(v, &o->nano_cpus, err) < 0)
			return kiln_units_flag_error(err, "--cpus", v);
	}
	else if (!strcmp(f, "--cpu-shares") || !strcmp(f, "-c")) {
		if (kiln_units_parse_int(v, 0, INT64_MAX, &o->cpu_shares, err) < 0)
			return kiln_units_flag_error(err, "-c, --cpu-shares", v);
		/* docker's adjustment to what the kernel takes */
		if (o->cpu_shares > 0 && o->cpu_shares < 2)
			o->cpu_shares = 2;
		if (o->cpu_shares > 262144)
			o->cpu_shares = 262144;
	}
	else if (!strcmp(f, "--pids-limit")) {
		/* -1 and 0: unlimited */
		if (kiln_units_parse_int(v, -1, INT64_MAX, &o->pids, err) < 0)
			return kiln_units_flag_error(err, "--pids-limit", v);
		if (o->pids < 0)
			o->pids = 0;
	}
	else if (!strcmp(f, "--network") || !strcmp(f, "--net")) {
		if (strcmp(v, "none") && strcmp(v, "host") && strcmp(v, "bridge") && strcmp(v, "default"))
			return kiln_err_set(err, 0, "unsupported network \"%s\" (none, host, bridge)", v);
		o->network = v;
	}
	else if (!strcmp(f, "-h") || !strcmp(f, "--hostname")) o->hostname = v;
	else if (!strcmp(f, "--cap-add")) kiln_strv_push(&o->cap_add, v);
	else if (!strcmp(f, "--cap-drop")) kiln_strv_push(&o->cap_drop, v);
	else if (!strcmp(f, "--rootfs")) o->rootfs = v;
	else if (!strcmp(f, "--log-opt")) kiln_strv_push(&o->log_opts, v);
	else if (!strcmp(f, "--device")) {
		struct kiln_device d;
		if (kiln_device_parse(v, &d, err) < 0)
			return -1;
		kiln_device_free(&d);
		kiln_strv_push(&o->devices, v);
	}
	else if (!strcmp(f, "--uidmap")) {
		int64_t id[3];
		const char *p = v;
		for (int k = 0; k < 3; k++) {
			const char *e = k < 2 ? strchr(p, ':') : p + strlen(p);
			KILN_AUTOFREE char *field = e ? kiln_xstrndup(p, (size_t)(e - p)) : NULL;
			if (!field || kiln_units_parse_int(field, k == 2 ? 1 : 0, k == 0 ? 0 : 0xffffffffLL, &id[k],
							  err) < 0) {
				kiln_err_set(err, 0, "want 0:HOST_ID:SIZE");
				return kiln_units_flag_error(err, "--uidmap", v);
			}
			p = e + 1;
		}
		if (id[1] + id[2] > 0xffffffffLL) {
			kiln_err_set(err, 0, "HOST_ID + SIZE beyond the 32-bit id range");
			return kiln_units_flag_error(err, "--uidmap", v);
		}
		o->userns_uid = (uint32_t)id[1];
		o->userns_size = (uint32_t)id[2];
	}
	else if (!strcmp(f, "--security-opt")) {
		if (!strcmp(v, "no-new-privileges") || !strcmp(v, "no-new-privileges:true") ||
		    !strcmp(v, "no-new-privileges=true"))
			o->no_new_privs = true;
		else if (!strcmp(v, "no-new-privileges:false") || !strcmp(v, "no-new-privileges=false"))
			o->no_new_privs = false;
		else if (!strcmp(v, "seccomp=unconfined") || !strcmp(v, "seccomp:unconfined"))
			o->seccomp = KILN_SECCOMP_UNCONFINED;
		else if (!strncmp(v, "seccomp=", 8) || !strncmp(v, "seccomp:", 8)) {
			o->seccomp = KILN_SECCOMP_FILE;
			o->seccomp_file = v + 8;
		} else if (!strncmp(v, "label", 5) || !strncmp(v, "apparmor", 8)) {
			/* no LSM here: accepted and ignored like on a host without one */
		} else
			return kiln_err_set(err, 0, "unsupported --security-opt \"%s\"", v);
	}
	else return kiln_err_set(err, 0, "unknown flag: %s", f);
	return 0;
}

int kiln_run_parse(int argc, char **argv, struct kiln_run_opts *o, struct kiln_err *err)
{
	memset(o, 0, sizeof(*o));
	int i = 1;
	for (; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--")) {
			i++;
			break;
		}
		if (a[0] != '-' || !a[1])
			break;
		if (!strcmp(a, "--help")) {
			o->help = true;
			return 0;
		}
		if (a[1] != '-' && !takes_value(a)) {
			/* a cluster of boolean short flags: -d -i -t -it -dit ... */
			for (const char *c = a + 1; *c; c++) {
				if (*c == 'd') o->detach = true;
				else if (*c == 'i') o->interactive = true;
				else if (*c == 't') o->tty = true;
				else return kiln_err_set(err, 0, "unknown shorthand flag: '%c' in %s", *c, a);
			}
			continue;
		}
		const char *eq = a[1] == '-' ? strchr(a, '=') : NULL;
		char flag[64];
		const char *val = NULL;
		if (eq) {
			snprintf(flag, sizeof(flag), "%.*s", (int)(eq - a), a);
			val = eq + 1;
		} else {
			snprintf(flag, sizeof(flag), "%s", a);
		}
		if (takes_value(flag)) {
			if (!val) {
				if (i + 1 >= argc)
					return kiln_err_set(err, 0, "flag needs an argument: %s", flag);
				val = argv[++i];
			}
			if (apply_flag(o, flag, val, err) < 0)
				return -1;
			continue;
		}
		bool on = true;
		if (val) {
			if (!strcmp(val, "false") || !strcmp(val, "0")) on = false;
			else if (strcmp(val, "true") && strcmp(val, "1"))
				return kiln_err_set(err, 0, "invalid boolean value \"%s\" for %s", val, flag);
		}
		if (!strcmp(flag, "--detach")) o->detach = on;
		else if (!strcmp(flag, "--interactive")) o->interactive = on;
		else if (!strcmp(flag, "--tty")) o->tty = on;
		else if (!strcmp(flag, "--rm")) o->rm = on;
		else if (!strcmp(flag, "--privileged")) o->privileged = on;
		else if (!strcmp(flag, "--read-only")) o->read_only = on;
		else if (!strcmp(flag, "--init")) o->init = on;
		else return kiln_err_set(err, 0, "unknown flag: %s", flag);
	}
	/* docker's rules for --memory-swap: at least --memory, and only with it */
	if (o->memory_swap > 0 && o->memory == 0)
		return kiln_err_set(err, 0, "--memory-swap needs --memory (the memory limit) as well");
	if (o->memory_swap > 0 && o->memory_swap < o->memory)
		return kiln_err_set(err, 0, "--memory-swap must be at least the --memory limit");
	if (!o->rootfs) {
		if (i >= argc)
			return kiln_err_set(err, 0, "\"kiln run\" requires at least 1 argument (IMAGE [COMMAND...])");
		o->image = argv[i++];
	}
	o->cmd = argv + i;
	o->n_cmd = argc - i;
	if (o->rootfs && o->n_cmd == 0)
		return kiln_err_set(err, 0, "--rootfs needs a command");
	if (o->ports.n && o->network && strcmp(o->network, "bridge") && strcmp(o->network, "default"))
		return kiln_err_set(err, 0, "publishing ports needs --network bridge");
	return 0;
}

/* ---------------------------------------------------------------- helpers */

static int read_env_file(const char *path, struct kiln_strv *env, struct kiln_err *err)
{
	char *text = NULL;
	if (kiln_read_file(path, 1 << 20, &text, NULL, err) < 0)
		return kiln_err_wrap(err, "--env-file");
	for (char *p = text; p && *p;) {
		char *eol = strchr(p, '\n');
		if (eol)
			*eol = '\0';
		size_t l = strlen(p);
		if (l && p[l - 1] == '\r')
			p[--l] = '\0';
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p && *p != '#') {
			if (strchr(p, '=')) {
				kiln_strv_push(env, p);
			} else {
				const char *v = getenv(p);
				if (v)
					kiln_strv_push_owned(env, kiln_xasprintf("%s=%s", p, v));
			}
		}
		p = eol ? eol + 1 : NULL;
	}
	free(text);
	return 0;
}

/* Set or replace K=V in env. */
static void env_set(struct kiln_strv *env, const char *kv)
{
	const char *eq = strchr(kv, '=');
	size_t kl = eq ? (size_t)(eq - kv) : strlen(kv);
	for (size_t i = 0; i < env->n; i++)
		if (!strncmp(env->v[i], kv, kl) && env->v[i][kl] == '=') {
			free(env->v[i]);
			env->v[i] = kiln_xstrdup(kv);
			return;
		}
	kiln_strv_push(env, kv);
}

static int parse_volume(const char *s, struct kiln_mount *m, struct kiln_err *err)
{
	memset(m, 0, sizeof(*m));
	m->source_fd = -1;
	m->type = KILN_MOUNT_BIND;
	char *host, *container;
	if (kiln_run_volume_parse(s, &host, &container, &m->readonly, err) < 0)
		return kiln_units_flag_error(err, "-v, --volume", s);
	m->source = host;
	m->target = container;
	/* like docker -v: a missing host directory is created */
	struct stat st;
	if (stat(host, &st) < 0 && errno == ENOENT && kiln_mkdir_p(host, 0755, err) < 0)
		return kiln_err_wrap(err, "volume \"%s\"", s);
	return 0;
}

/* ---------------------------------------------------------------- images */

struct run_image {
	struct kiln_store *store;
	struct kiln_snapshotter *sn;
	struct kiln_snap *snap;
	struct kiln_image *img;
	struct kiln_snap_mount_spec ms;
	bool have_ms;
	char *lower;
};

static void run_image_free(struct run_image *ri, bool discard)
{
	if (ri->have_ms)
		kiln_snap_mount_spec_free(&ri->ms);
	free(ri->lower);
	if (ri->snap) {
		if (discard)
			kiln_snap_discard(ri->snap, NULL);
		else
			kiln_snap_release(ri->snap);
	}
	if (ri->sn)
		kiln_snap_close(ri->sn);
	kiln_image_free(ri->img);
	kiln_store_close(ri->store);
	memset(ri, 0, sizeof(*ri));
}

/* Load the image, make sure its layers are snapshots, prepare a writable
 * child keyed by the container id (a container that is not recorded gets a
 * temporary key: kiln_snap_open removes it once this process is gone, even
 * after a kill -9). */
static int run_image_prepare(const char *ref, const char *id, bool recorded, struct run_image *ri,
			     struct kiln_sandbox_spec *spec, struct kiln_err *err)
{
	memset(ri, 0, sizeof(*ri));
	const char *root = kiln_global.root;
	if (kiln_store_open(root, KILN_STORE_RDONLY, &ri->store, err) < 0)
		return kiln_err_wrap(err, "opening the store %s", root);
	if (kiln_image_load(ri->store, ref, &ri->img, err) < 0) {
		if (err->errnum == ENOENT)
			return kiln_err_set(err, 0, "Unable to find image '%s' locally", ref);
		return -1;
	}
	char *snapdir = kiln_xasprintf("%s/snapshots", root);
	int r = kiln_snap_open(snapdir, kiln_global.storage_driver, &ri->sn, err);
	free(snapdir);
	if (r < 0)
		return kiln_err_wrap(err, "opening snapshots");
	char chain[KILN_DIGEST_MAX] = "";
	for (size_t i = 0; i < ri->img->n_layers; i++) {
		char next[KILN_DIGEST_MAX];
		kiln_chain_id_next(i ? chain : NULL, ri->img->layers[i].diff_id, next);
		if (!kiln_snap_exists(ri->sn, next)) {
			int fd = -1;
			if (kiln_store_blob_open(ri->store, ri->img->layers[i].digest, &fd, err) < 0)
				return kiln_err_wrap(err, "layer %zu", i + 1);
			r = kiln_snap_apply_layer(ri->sn, i ? chain : NULL, fd, ri->img->layers[i].diff_id, next, err);
			close(fd);
			if (r < 0)
				return kiln_err_wrap(err, "unpacking layer %zu", i + 1);
		}
		memcpy(chain, next, sizeof(chain));
	}
	char key[80];
	if (recorded)
		snprintf(key, sizeof(key), "ctr-%.64s", id);
	else
		snprintf(key, sizeof(key), "run-%d-1", (int)getpid());
	if (kiln_snap_prepare(ri->sn, chain[0] ? chain : NULL, key, KILN_SNAP_NOMOUNT, &ri->snap, err) < 0)
		return kiln_err_wrap(err, "preparing the container's snapshot");
	const char *rootfs = kiln_snap_rootfs(ri->snap);
	if (rootfs) {
		spec->rootfs = rootfs;
		return 0;
	}
	if (kiln_snap_mount_spec(ri->snap, &ri->ms, err) < 0)
		return -1;
	ri->have_ms = true;
	if (!ri->ms.overlay) {
		spec->rootfs = ri->ms.source;
		return 0;
	}
	struct kiln_buf b = {0};
	for (char **l = ri->ms.lowerdirs; l && *l; l++) {
		if (b.len)
			kiln_buf_putc(&b, ':');
		kiln_buf_puts(&b, *l);
	}
	ri->lower = kiln_buf_steal(&b);
	/* the overlay is mounted at the upper's sibling "merged" dir in the
	 * container's own mount namespace */
	char *merged = kiln_xasprintf("%s/../merged", ri->ms.upperdir);
	mkdir(merged, 0755);
	spec->rootfs = merged;
	spec->overlay_lower = ri->lower;
	spec->overlay_upper = ri->ms.upperdir;
	spec->overlay_work = ri->ms.workdir;
	return 0;
}

/* ---------------------------------------------------------------- detached */

/* The log thread of a recorded container (runtime/logrelay.c relays). */
struct logger {
	struct kiln_logrelay relay;
	struct kiln_logwriter w;
	bool have_w;
	pthread_t th;
	bool started;
};

static void *logger_main(void *arg)
{
	struct logger *lg = arg;
	kiln_logrelay_pump(&lg->relay);
	return NULL;
}

/* A message of kiln's own (a failed start, an OOM kill) as a stderr line. */
static void log_message(struct logger *lg, const char *msg)
{
	if (!lg->have_w)
		return;
	char *line = kiln_xasprintf("%s\n", msg);
	kiln_logwriter_write(&lg->w, "stderr", line, strlen(line), false);
	free(line);
}

static void logger_init(struct logger *lg)
{
	memset(lg, 0, sizeof(*lg));
	lg->relay.fds[0] = lg->relay.fds[1] = -1;
	lg->relay.echo[0] = lg->relay.echo[1] = -1;
	lg->w.fd = lg->w.dirfd = -1;
	lg->relay.w = &lg->w;
}

struct sup {
	const char *root;
	struct kiln_container_state *st;
	struct logger lg;
	int close_after_start[2];
};

static int sup_on_start(pid_t pid, void *arg)
{
	struct sup *s = arg;
	for (int i = 0; i < 2; i++)
		if (s->close_after_start[i] >= 0) {
			close(s->close_after_start[i]);
			s->close_after_start[i] = -1;
		}
	s->st->pid = pid;
	s->st->supervisor = getpid();
	if (!s->lg.started && (s->lg.relay.fds[0] >= 0 || s->lg.relay.fds[1] >= 0))
		s->lg.started = pthread_create(&s->lg.th, NULL, logger_main, &s->lg) == 0;
	return 0;
}

/* The program runs: now the container counts as started. */
static void sup_on_running(pid_t pid, void *arg)
{
	struct sup *s = arg;
	s->st->pid = pid;
	snprintf(s->st->status, sizeof(s->st->status), "running");
	kiln_log_time_now(s->st->started, sizeof(s->st->started));
	struct kiln_err err = {0};
	kiln_container_save(s->root, s->st, &err);
}

static int sup_on_tty(int master, void *arg)
{
	struct sup *s = arg;
	s->lg.relay.fds[0] = fcntl(master, F_DUPFD_CLOEXEC, 3);
	s->lg.relay.fds[1] = -1;
	if (!s->lg.started)
		s->lg.started = pthread_create(&s->lg.th, NULL, logger_main, &s->lg) == 0;
	return 0;
}

/* ---------------------------------------------------------------- main */

static void join_cmd(char *const *v, char *buf, size_t len)
{
	buf[0] = '\0';
	size_t off = 0;
	for (; v && *v && off + 1 < len; v++)
		off += (size_t)snprintf(buf + off, len - off, "%s%s", off ? " " : "", *v);
}

int kiln_cmd_run(int argc, char **argv)
{
	/* -h is --hostname here, as in docker: only --help among our own flags */
	struct kiln_err err = {0};
	struct kiln_run_opts o;
	int prc = kiln_run_parse(argc, argv, &o, &err);
	if (prc == 0 && o.help) {
		kiln_run_opts_free(&o);
		printf("Usage: kiln run [OPTIONS] IMAGE [COMMAND] [ARG...]\n"
		       "       kiln run [OPTIONS] --rootfs DIR COMMAND [ARG...]\n\n"
		       "Run a command in a new container.\n\n"
		       "Options:\n"
		       "  -d, --detach            run in the background and print the container id\n"
		       "  -i, --interactive       keep stdin open\n"
		       "  -t, --tty               allocate a pseudo-terminal\n"
		       "      --rm                remove the container when it exits\n"
		       "      --name NAME         name the container\n"
		       "  -e, --env K=V           set an environment variable\n"
		       "      --env-file FILE     read environment variables from a file\n"
		       "  -p, --publish H:C[/udp] publish a container port on the host\n"
		       "  -v, --volume H:C[:ro]   bind mount a host path\n"
		       "      --tmpfs DIR[:OPTS]  mount a tmpfs\n"
		       "  -w, --workdir DIR       working directory\n"
		       "  -u, --user U[:G]        user (name or id) from the image's /etc/passwd\n"
		       "      --entrypoint CMD    override the image's entrypoint\n"
		       "  -m, --memory SIZE       memory limit\n"
		       "      --memory-swap SIZE  memory+swap limit (-1 unlimited)\n"
		       "      --cpus N            CPU quota\n"
		       "  -c, --cpu-shares N      CPU shares (relative weight)\n"
		       "      --pids-limit N      process limit\n"
		       "      --network MODE      none, host or bridge (default)\n"
		       "  -h, --hostname NAME     container host name\n"
		       "      --cap-add CAP       add a capability (or ALL)\n"
		       "      --cap-drop CAP      drop a capability (or ALL)\n"
		       "      --security-opt OPT  no-new-privileges, seccomp=unconfined|FILE\n"
		       "      --device H[:C][:rwm] give the container the host device H (at C)\n"
		       "      --privileged        all capabilities, no seccomp, no masked paths, all devices\n"
		       "      --read-only         mount the root filesystem read-only\n"
		       "      --init              run a small init as PID 1\n"
		       "      --log-opt K=V       max-size=SIZE (default 20m, -1 unlimited), max-file=N (default 5)\n"
		       "      --rootfs DIR        run DIR as the root filesystem instead of an image\n"
		       "      --uidmap 0:HOST:N   a user namespace: container ids 0..N-1 are HOST.. outside\n");
		return 0;
	}
	if (prc < 0) {
		/* like docker run: a bad command line is exit 125, as any other
		 * failure before the container's own command runs */
		kiln_err_print(&err);
		kiln_run_opts_free(&o);
		return KILN_EXIT_SETUP;
	}
	/* like docker's daemon, the log options are checked when the container
	 * is created: exit 125 */
	struct kiln_logopts logopts;
	kiln_logopts_default(&logopts);
	for (size_t i = 0; i < o.log_opts.n; i++)
		if (kiln_logopts_parse(o.log_opts.v[i], &logopts, &err) < 0) {
			kiln_err_print(&err);
			kiln_run_opts_free(&o);
			return KILN_EXIT_SETUP;
		}
	int rc = KILN_EXIT_SETUP;
	struct kiln_sandbox_spec spec;
	kiln_sandbox_spec_init(&spec);
	spec.origin = KILN_ORIGIN_RUN;
	struct kiln_strv env = {0}, argvv = {0};
	struct kiln_mount *mounts = NULL;
	struct kiln_port *ports = NULL;
	struct kiln_device *devices = NULL;
	struct run_image ri = {0};
	bool have_image = false;
	char id[65];
	kiln_container_new_id(id);
	char *cdir = NULL;
	const char *stop_signal = "";
	int devnull = -1;

	/* the image's config first, the flags override it */
	json_t *cfg = NULL;
	if (o.image) {
		if (run_image_prepare(o.image, id, o.detach || !o.rm || o.name, &ri, &spec, &err) < 0) {
			run_image_free(&ri, true);   /* what it opened before failing */
			goto fail;
		}
		have_image = true;
		cfg = json_object_get(ri.img->config, "config");
	}
	size_t k;
	json_t *v;
	json_array_foreach(json_object_get(cfg, "Env"), k, v)
		if (json_string_value(v))
			env_set(&env, json_string_value(v));
	for (size_t i = 0; i < o.env_files.n; i++) {
		struct kiln_strv fe = {0};
		if (read_env_file(o.env_files.v[i], &fe, &err) < 0)
			goto fail;
		for (size_t j = 0; j < fe.n; j++)
			env_set(&env, fe.v[j]);
		kiln_strv_free(&fe);
	}
	for (size_t i = 0; i < o.env.n; i++)
		env_set(&env, o.env.v[i]);

	/* command: entrypoint + cmd, docker's rules */
	if (o.entrypoint_set) {
		if (o.entrypoint[0])
			kiln_strv_push(&argvv, o.entrypoint);
	} else {
		json_array_foreach(json_object_get(cfg, "Entrypoint"), k, v)
			kiln_strv_push(&argvv, json_string_value(v) ? json_string_value(v) : "");
	}
	if (o.n_cmd > 0) {
		for (int i = 0; i < o.n_cmd; i++)
			kiln_strv_push(&argvv, o.cmd[i]);
	} else if (!o.entrypoint_set) {
		json_array_foreach(json_object_get(cfg, "Cmd"), k, v)
			kiln_strv_push(&argvv, json_string_value(v) ? json_string_value(v) : "");
	}
	if (argvv.n == 0) {
		kiln_err_set(&err, 0, "no command specified");
		rc = KILN_EXIT_SETUP;
		goto fail;
	}
	const char *cfg_user = json_string_value(json_object_get(cfg, "User"));
	const char *cfg_wd = json_string_value(json_object_get(cfg, "WorkingDir"));
	const char *cfg_stop = json_string_value(json_object_get(cfg, "StopSignal"));
	if (cfg_stop)
		stop_signal = cfg_stop;

	if (o.rootfs)
		spec.rootfs = o.rootfs;
	spec.id = id;
	spec.argv = argvv.v;
	spec.env = env.v;
	spec.cwd = o.workdir ? o.workdir : (cfg_wd && cfg_wd[0] ? cfg_wd : "/");
	spec.user = o.user ? o.user : (cfg_user && cfg_user[0] ? cfg_user : NULL);
	spec.hostname = o.hostname;
	spec.readonly_rootfs = o.read_only;
	spec.privileged = o.privileged;
	spec.no_new_privs = o.no_new_privs;
	spec.seccomp = o.seccomp;
	spec.seccomp_file = o.seccomp_file;
	spec.init = o.init;
	spec.tty = o.tty;
	spec.interactive = o.interactive;
	spec.cap_add = o.cap_add.v;
	spec.cap_drop = o.cap_drop.v;
	spec.limits.memory = o.memory;
	spec.limits.memory_swap = o.memory_swap;
	spec.limits.nano_cpus = o.nano_cpus;
	spec.limits.cpu_shares = o.cpu_shares;
	spec.limits.pids = o.pids;
	spec.userns_uid = o.userns_uid;
	spec.userns_gid = o.userns_uid;
	spec.userns_size = o.userns_size;
	if (!o.network || !strcmp(o.network, "bridge") || !strcmp(o.network, "default"))
		spec.net = KILN_NET_BRIDGE;
	else if (!strcmp(o.network, "host"))
		spec.net = KILN_NET_HOST;
	else
		spec.net = KILN_NET_NONE;
	/* `kiln run` flags are the user's explicit entitlements */
	spec.entitlements = (o.privileged ? KILN_ENT_PRIVILEGED : 0) |
			    (spec.net == KILN_NET_HOST ? KILN_ENT_NET_HOST : 0) |
			    (o.cap_add.n ? KILN_ENT_CAP_ADD : 0) |
			    (o.seccomp != KILN_SECCOMP_DEFAULT ? KILN_ENT_UNCONFINED : 0);

	size_t nm = o.volumes.n + o.tmpfs.n;
	mounts = kiln_xcalloc(nm ? nm : 1, sizeof(*mounts));
	for (size_t i = 0; i < o.volumes.n; i++)
		if (parse_volume(o.volumes.v[i], &mounts[i], &err) < 0) {
			rc = KILN_EXIT_SETUP;
			goto fail;
		}
	for (size_t i = 0; i < o.tmpfs.n; i++) {
		struct kiln_mount *m = &mounts[o.volumes.n + i];
		m->type = KILN_MOUNT_TMPFS;
		m->source_fd = -1;
		char *target, *options;
		if (kiln_run_tmpfs_parse(o.tmpfs.v[i], &target, &options, &err) < 0) {
			kiln_units_flag_error(&err, "--tmpfs", o.tmpfs.v[i]);
			goto fail;
		}
		m->target = target;
		m->options = options;
	}
	spec.mounts = mounts;
	spec.n_mounts = nm;
	ports = kiln_xcalloc(o.ports.n ? o.ports.n : 1, sizeof(*ports));
	for (size_t i = 0; i < o.ports.n; i++)
		if (kiln_run_parse_port(o.ports.v[i], &ports[i], &err) < 0) {
			rc = KILN_EXIT_SETUP;
			goto fail;
		}
	spec.ports = ports;
	spec.n_ports = o.ports.n;
	devices = kiln_xcalloc(o.devices.n ? o.devices.n : 1, sizeof(*devices));
	for (size_t i = 0; i < o.devices.n; i++)
		if (kiln_device_parse(o.devices.v[i], &devices[i], &err) < 0 ||
		    kiln_device_resolve(&devices[i], &err) < 0)
			goto fail;   /* 125, as docker's "error gathering device information" */
	spec.devices = devices;
	spec.n_devices = o.devices.n;
	if (!o.interactive) {
		devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
		spec.stdin_fd = devnull;
	}

	struct kiln_container_state st;
	memset(&st, 0, sizeof(st));
	bool record = o.detach || !o.rm || o.name;
	if (record) {
		snprintf(st.id, sizeof(st.id), "%s", id);
		snprintf(st.name, sizeof(st.name), "%s", o.name ? o.name : "");
		snprintf(st.image, sizeof(st.image), "%s", o.image ? o.image : o.rootfs);
		join_cmd(argvv.v, st.command, sizeof(st.command));
		snprintf(st.status, sizeof(st.status), "created");
		snprintf(st.stop_signal, sizeof(st.stop_signal), "%s", stop_signal);
		st.auto_remove = o.rm;
		kiln_log_time_now(st.created, sizeof(st.created));
		for (size_t i = 0; i < spec.n_ports; i++) {
			size_t l = strlen(st.ports);
			snprintf(st.ports + l, sizeof(st.ports) - l, "%s%s:%u->%u/%s", l ? ", " : "",
				 ports[i].host_ip ? ports[i].host_ip : "0.0.0.0", ports[i].host_port,
				 ports[i].container_port, ports[i].udp ? "udp" : "tcp");
		}
		if (o.name) {
			struct kiln_container_state other;
			if (kiln_container_find(kiln_global.root, o.name, &other, NULL) == 0 &&
			    !strcmp(other.name, o.name)) {
				kiln_err_set(&err, 0, "the container name \"%s\" is already in use by container %.12s",
					     o.name, other.id);
				goto fail;
			}
		}
		if (!o.name)
			kiln_container_random_name(st.name, sizeof(st.name));
		if (kiln_container_save(kiln_global.root, &st, &err) < 0)
			goto fail;
		cdir = kiln_container_dir(kiln_global.root, id);
		/* what `kiln exec` needs to know about the container */
		json_t *c = json_object();
		json_t *ev = json_array();
		for (size_t i = 0; i < env.n; i++)
			json_array_append_new(ev, json_string(env.v[i]));
		json_object_set_new(c, "env", ev);
		json_object_set_new(c, "user", json_string(spec.user ? spec.user : ""));
		json_object_set_new(c, "workdir", json_string(spec.cwd ? spec.cwd : "/"));
		json_object_set_new(c, "privileged", json_boolean(o.privileged));
		char *ctext = json_dumps(c, JSON_COMPACT);
		json_decref(c);
		char *cpath = kiln_xasprintf("%s/config.json", cdir);
		struct kiln_err ignored = {0};
		kiln_write_file_atomic(AT_FDCWD, cpath, ctext, strlen(ctext), 0600, &ignored);
		free(cpath);
		free(ctext);
		spec.state_dir = cdir;
	}

	if (o.detach) {
		int outp[2] = {-1, -1}, errp[2] = {-1, -1};
		if (!o.tty && (pipe2(outp, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0)) {
			kiln_err_set(&err, errno, "pipe");
			goto fail;
		}
		fflush(stdout);
		fflush(stderr);
		pid_t p = fork();
		if (p < 0) {
			kiln_err_set(&err, errno, "fork");
			goto fail;
		}
		if (p == 0) {
			setsid();
			pid_t p2 = fork();
			if (p2 != 0)
				_exit(p2 < 0 ? 1 : 0);
			/* the supervisor: its lock tells others it is alive */
			kiln_container_hold(kiln_global.root, id, NULL);
			int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
			dup2(nul, 0);
			dup2(nul, 1);
			dup2(nul, 2);
			struct sup s = {.root = kiln_global.root, .st = &st};
			logger_init(&s.lg);
			s.lg.have_w = kiln_logwriter_open(&s.lg.w, cdir, &logopts, NULL) == 0;
			s.lg.relay.fds[0] = outp[0];
			s.lg.relay.fds[1] = errp[0];
			s.close_after_start[0] = outp[1];
			s.close_after_start[1] = errp[1];
			spec.stdout_fd = o.tty ? -1 : outp[1];
			spec.stderr_fd = o.tty ? -1 : errp[1];
			spec.stdin_fd = nul;
			spec.interactive = false;
			spec.on_start = sup_on_start;
			spec.on_start_arg = &s;
			spec.on_running = sup_on_running;
			spec.on_running_arg = &s;
			if (o.tty) {
				spec.on_tty = sup_on_tty;
				spec.on_tty_arg = &s;
			}
			struct kiln_exit ex;
			struct kiln_err e2 = {0};
			int r = kiln_sandbox_run(&spec, &ex, &e2);
			for (int i = 0; i < 2; i++)
				if (s.close_after_start[i] >= 0)
					close(s.close_after_start[i]);
			if (s.lg.started)
				pthread_join(s.lg.th, NULL);
			if (r < 0) {
				log_message(&s.lg, e2.msg);
				st.exit_code = e2.exit_code ? e2.exit_code : 125;
			} else {
				st.exit_code = ex.code;
				st.oom_killed = ex.oom_killed;
				if (ex.message[0])
					log_message(&s.lg, ex.message);
			}
			kiln_logwriter_close(&s.lg.w);
			snprintf(st.status, sizeof(st.status), "exited");
			st.pid = 0;
			kiln_log_time_now(st.finished, sizeof(st.finished));
			if (have_image && o.rm)
				run_image_free(&ri, true);
			/* a start that failed stays recorded for `kiln run` to report
			 * (it removes a --rm container itself then) */
			if (o.rm && st.started[0])
				kiln_rm_rf(cdir, NULL);
			else
				kiln_container_save(kiln_global.root, &st, &e2);
			_exit(0);
		}
		waitpid(p, NULL, 0);
		for (int i = 0; i < 2; i++) {
			if (outp[i] >= 0)
				close(outp[i]);
			if (errp[i] >= 0)
				close(errp[i]);
		}
		/* wait until the supervisor reports the start (or the failure) */
		for (int i = 0; i < 1000; i++) {
			struct kiln_container_state now;
			if (kiln_container_load(kiln_global.root, id, &now, NULL) < 0) {
				if (o.rm)
					break;   /* already ran and removed */
				continue;
			}
			if (!strcmp(now.status, "exited") && !now.started[0]) {
				rc = now.exit_code ? now.exit_code : KILN_EXIT_SETUP;
				char *logp = kiln_xasprintf("%s/log", cdir);
				char *text = NULL;
				kiln_read_file(logp, 1 << 16, &text, NULL, NULL);
				free(logp);
				json_t *j = text ? json_loads(text, JSON_DISABLE_EOF_CHECK, NULL) : NULL;
				const char *msg = j ? json_string_value(json_object_get(j, "log")) : NULL;
				kiln_err_set(&err, 0, "%.*s", msg ? (int)strcspn(msg, "\n") : 25,
					     msg ? msg : "container failed to start");
				json_decref(j);
				free(text);
				if (o.rm)
					kiln_rm_rf(cdir, NULL);
				goto fail;
			}
			if (strcmp(now.status, "created") != 0)
				break;
			struct timespec ts = {0, 5000000};
			nanosleep(&ts, NULL);
		}
		printf("%s\n", id);
		rc = 0;
		/* the supervisor owns the snapshot now */
		if (have_image) {
			if (ri.snap)
				kiln_snap_release(ri.snap);
			ri.snap = NULL;
			run_image_free(&ri, false);
			have_image = false;
		}
		goto out;
	}

	struct kiln_exit ex;
	/* a recorded foreground container: this process is its supervisor */
	struct sup fg = {.root = kiln_global.root, .st = &st};
	logger_init(&fg.lg);
	fg.close_after_start[0] = fg.close_after_start[1] = -1;
	if (record) {
		spec.on_start = sup_on_start;
		spec.on_start_arg = &fg;
		spec.on_running = sup_on_running;
		spec.on_running_arg = &fg;
		/* without a tty, output goes through pipes into the log as well
		 * (`kiln logs` works for attached containers, like docker's) */
		int op[2] = {-1, -1}, ep[2] = {-1, -1};
		kiln_container_hold(kiln_global.root, id, NULL);
		if (!o.tty && kiln_logwriter_open(&fg.lg.w, cdir, &logopts, NULL) == 0) {
			fg.lg.have_w = true;
			if (pipe2(op, O_CLOEXEC) == 0 && pipe2(ep, O_CLOEXEC) == 0) {
				fg.lg.relay.fds[0] = op[0];
				fg.lg.relay.fds[1] = ep[0];
				fg.lg.relay.echo[0] = 1;
				fg.lg.relay.echo[1] = 2;
				fg.close_after_start[0] = op[1];
				fg.close_after_start[1] = ep[1];
				spec.stdout_fd = op[1];
				spec.stderr_fd = ep[1];
			} else {
				for (int i = 0; i < 2; i++) {
					if (op[i] >= 0)
						close(op[i]);
					if (ep[i] >= 0)
						close(ep[i]);
				}
			}
		}
	}
	int sr = kiln_sandbox_run(&spec, &ex, &err);
	for (int i = 0; i < 2; i++)
		if (fg.close_after_start[i] >= 0) {
			close(fg.close_after_start[i]);
			fg.close_after_start[i] = -1;
		}
	if (fg.lg.started)
		pthread_join(fg.lg.th, NULL);
	for (int i = 0; i < 2; i++)
		if (fg.lg.relay.fds[i] >= 0)
			close(fg.lg.relay.fds[i]);
	kiln_logwriter_close(&fg.lg.w);
	if (sr < 0) {
		rc = err.exit_code ? err.exit_code : KILN_EXIT_SETUP;
		if (record) {
			st.exit_code = rc;
			snprintf(st.status, sizeof(st.status), "exited");
			kiln_log_time_now(st.finished, sizeof(st.finished));
			if (o.rm)
				kiln_rm_rf(cdir, NULL);
			else
				kiln_container_save(kiln_global.root, &st, NULL);
		}
		goto fail;
	}
	if (ex.message[0])
		fprintf(stderr, "kiln: %s\n", ex.message);
	rc = ex.code;
	if (record) {
		st.exit_code = ex.code;
		st.oom_killed = ex.oom_killed;
		snprintf(st.status, sizeof(st.status), "exited");
		kiln_log_time_now(st.finished, sizeof(st.finished));
		if (o.rm)
			kiln_rm_rf(cdir, NULL);
		else
			kiln_container_save(kiln_global.root, &st, NULL);
	}
	goto out;
fail:
	kiln_err_print(&err);
	if (rc == 0)
		rc = KILN_EXIT_SETUP;
out:
	if (have_image)
		run_image_free(&ri, o.rm || rc == KILN_EXIT_SETUP);
	if (devnull >= 0)
		close(devnull);
	if (mounts) {
		for (size_t i = 0; i < nm; i++) {
			free((char *)mounts[i].source);
			free((char *)mounts[i].target);
			free((char *)mounts[i].options);
		}
		free(mounts);
	}
	if (devices) {
		for (size_t i = 0; i < o.devices.n; i++)
			kiln_device_free(&devices[i]);
		free(devices);
	}
	if (ports) {
		for (size_t i = 0; i < o.ports.n; i++)
			free((char *)ports[i].host_ip);
		free(ports);
	}
	free(cdir);
	kiln_strv_free(&env);
	kiln_strv_free(&argvv);
	kiln_run_opts_free(&o);
	return rc;
}
