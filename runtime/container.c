/* kiln — container state under <root>/containers/<id>/. */
#include "runtime/container.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "runtime/logrelay.h"

void kiln_container_new_id(char out[65])
{
	unsigned char b[32];
	if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b)) {
		uint64_t t = kiln_now_ns() ^ ((uint64_t)getpid() << 32);
		for (size_t i = 0; i < sizeof(b); i++)
			b[i] = (unsigned char)((t >> ((i % 8) * 8)) + i * 131);
	}
	for (size_t i = 0; i < sizeof(b); i++)
		sprintf(out + 2 * i, "%02x", b[i]);
	out[64] = '\0';
}

char *kiln_container_dir(const char *root, const char *id)
{
	return kiln_xasprintf("%s/containers/%s", root, id);
}

static void set_str(json_t *o, const char *k, const char *v)
{
	json_object_set_new(o, k, json_string(v ? v : ""));
}

static void get_str(json_t *o, const char *k, char *dst, size_t len)
{
	const char *v = json_string_value(json_object_get(o, k));
	snprintf(dst, len, "%s", v ? v : "");
}

int kiln_container_save(const char *root, const struct kiln_container_state *st, struct kiln_err *err)
{
	json_t *o = json_object();
	set_str(o, "id", st->id);
	set_str(o, "name", st->name);
	set_str(o, "image", st->image);
	set_str(o, "command", st->command);
	set_str(o, "status", st->status);
	if (st->error[0])
		set_str(o, "error", st->error);
	json_object_set_new(o, "pid", json_integer(st->pid));
	json_object_set_new(o, "supervisor", json_integer(st->supervisor));
	json_object_set_new(o, "exit_code", json_integer(st->exit_code));
	json_object_set_new(o, "oom_killed", json_boolean(st->oom_killed));
	set_str(o, "stop_signal", st->stop_signal);
	json_object_set_new(o, "auto_remove", json_boolean(st->auto_remove));
	set_str(o, "created", st->created);
	set_str(o, "started", st->started);
	set_str(o, "finished", st->finished);
	set_str(o, "ports", st->ports);
	char *text = json_dumps(o, JSON_INDENT(1) | JSON_SORT_KEYS);
	json_decref(o);
	char *dir = kiln_container_dir(root, st->id);
	int r = kiln_mkdir_p(dir, 0700, err);
	if (r == 0) {
		int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0) {
			r = kiln_err_set(err, errno, "opening %s", dir);
		} else {
			r = kiln_write_file_atomic(dfd, "state.json", text, strlen(text), 0600, err);
			close(dfd);
		}
	}
	free(dir);
	free(text);
	return r;
}

static int load_state(const char *root, const char *id, struct kiln_container_state *st,
		      struct kiln_err *err)
{
	memset(st, 0, sizeof(*st));
	char *path = kiln_xasprintf("%s/containers/%s/state.json", root, id);
	json_error_t je;
	json_t *o = json_load_file(path, 0, &je);
	if (!o) {
		kiln_err_set(err, 0, "reading %s: %s", path, je.text);
		free(path);
		return -1;
	}
	free(path);
	get_str(o, "id", st->id, sizeof(st->id));
	get_str(o, "name", st->name, sizeof(st->name));
	get_str(o, "image", st->image, sizeof(st->image));
	get_str(o, "command", st->command, sizeof(st->command));
	get_str(o, "status", st->status, sizeof(st->status));
	get_str(o, "error", st->error, sizeof(st->error));
	st->pid = (pid_t)json_integer_value(json_object_get(o, "pid"));
	st->supervisor = (pid_t)json_integer_value(json_object_get(o, "supervisor"));
	st->exit_code = (int)json_integer_value(json_object_get(o, "exit_code"));
	st->oom_killed = json_is_true(json_object_get(o, "oom_killed"));
	get_str(o, "stop_signal", st->stop_signal, sizeof(st->stop_signal));
	st->auto_remove = json_is_true(json_object_get(o, "auto_remove"));
	get_str(o, "created", st->created, sizeof(st->created));
	get_str(o, "started", st->started, sizeof(st->started));
	get_str(o, "finished", st->finished, sizeof(st->finished));
	get_str(o, "ports", st->ports, sizeof(st->ports));
	json_decref(o);
	if (!st->id[0])
		snprintf(st->id, sizeof(st->id), "%s", id);
	return 0;
}

/* The container this process supervises (its lock must not be touched:
 * closing any fd of the file would drop it). */
static char held_id[65];

static int lock_whole(int fd)
{
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
	return fcntl(fd, F_SETLK, &fl);
}

int kiln_container_hold(const char *root, const char *id, struct kiln_err *err)
{
	char *path = kiln_xasprintf("%s/containers/%s/supervisor.lock", root, id);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0 || lock_whole(fd) < 0) {
		kiln_err_set(err, errno, "locking %s", path);
		if (fd >= 0)
			close(fd);
		free(path);
		return -1;
	}
	free(path);
	snprintf(held_id, sizeof(held_id), "%s", id);
	return 0;   /* fd stays open for the life of the process */
}

/* A "running" container whose supervisor holds no lock: record its end. */
static void settle(const char *root, struct kiln_container_state *st)
{
	if (strcmp(st->status, "running") != 0 || !strcmp(st->id, held_id))
		return;
	char *path = kiln_xasprintf("%s/containers/%s/supervisor.lock", root, st->id);
	int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	free(path);
	if (fd < 0)
		return;   /* a supervisor without a lock (older kiln): judged by its pid */
	if (lock_whole(fd) < 0) {
		close(fd);
		return;   /* alive */
	}
	/* we hold the lock now: no supervisor writes the state meanwhile */
	struct kiln_container_state now;
	if (load_state(root, st->id, &now, NULL) == 0 && !strcmp(now.status, "running")) {
		snprintf(now.status, sizeof(now.status), "exited");
		snprintf(now.error, sizeof(now.error), "supervisor died");
		if (now.exit_code == 0)
			now.exit_code = 137;
		now.pid = 0;
		kiln_log_time_now(now.finished, sizeof(now.finished));
		kiln_container_save(root, &now, NULL);
	}
	if (now.id[0])
		*st = now;
	close(fd);
}

int kiln_container_load(const char *root, const char *id, struct kiln_container_state *st,
			struct kiln_err *err)
{
	if (load_state(root, id, st, err) < 0)
		return -1;
	settle(root, st);
	return 0;
}

int kiln_container_find(const char *root, const char *ref, struct kiln_container_state *st,
			struct kiln_err *err)
{
	if (!ref || !ref[0])
		return kiln_err_set(err, 0, "no container given");
	char *dir = kiln_xasprintf("%s/containers", root);
	DIR *d = opendir(dir);
	free(dir);
	if (!d)
		return kiln_err_set(err, 0, "No such container: %s", ref);
	struct dirent *e;
	char found[65] = "";
	int matches = 0;
	bool exact = false;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.' || strlen(e->d_name) != 64)
			continue;
		struct kiln_container_state s;
		if (load_state(root, e->d_name, &s, NULL) < 0)
			continue;
		if (!strcmp(s.name, ref) || !strcmp(s.id, ref)) {
			memcpy(found, e->d_name, 64);
			found[64] = '\0';
			exact = true;
			break;
		}
		if (!strncmp(s.id, ref, strlen(ref))) {
			memcpy(found, e->d_name, 64);
			found[64] = '\0';
			matches++;
		}
	}
	closedir(d);
	if (!exact && matches > 1)
		return kiln_err_set(err, 0, "multiple containers match \"%s\"", ref);
	if (!found[0])
		return kiln_err_set(err, 0, "No such container: %s", ref);
	return kiln_container_load(root, found, st, err);
}

bool kiln_container_running(const struct kiln_container_state *st)
{
	if (strcmp(st->status, "running") != 0 || st->pid <= 0)
		return false;
	if (kill(st->pid, 0) < 0 && errno == ESRCH)
		return false;
	/* the supervisor owns the container; when it is gone, so is the container */
	if (st->supervisor > 0 && kill(st->supervisor, 0) < 0 && errno == ESRCH)
		return false;
	return true;
}

int kiln_container_inspect_cmd(const char *name)
{
	const char *root = getenv("KILN_ROOT");
	extern __attribute__((weak)) struct { const char *root; } kiln_global;
	if (&kiln_global && kiln_global.root)
		root = kiln_global.root;
	if (!root || !root[0])
		root = "/var/lib/kiln";
	struct kiln_container_state st;
	struct kiln_err err = {0};
	if (kiln_container_find(root, name, &st, &err) < 0)
		return 1;
	bool running = kiln_container_running(&st);
	json_t *o = json_object();
	json_object_set_new(o, "Id", json_string(st.id));
	json_object_set_new(o, "Created", json_string(st.created));
	json_t *cmd = json_array();
	json_array_append_new(cmd, json_string(st.command));
	json_object_set_new(o, "Args", cmd);
	json_t *state = json_object();
	json_object_set_new(state, "Status", json_string(running ? "running" : strcmp(st.status, "running") ? st.status : "exited"));
	json_object_set_new(state, "Running", json_boolean(running));
	json_object_set_new(state, "OOMKilled", json_boolean(st.oom_killed));
	json_object_set_new(state, "Pid", json_integer(running ? st.pid : 0));
	json_object_set_new(state, "ExitCode", json_integer(st.exit_code));
	json_object_set_new(state, "Error", json_string(st.error));
	json_object_set_new(state, "Dead", json_false());
	json_object_set_new(state, "StartedAt", json_string(st.started));
	json_object_set_new(state, "FinishedAt", json_string(st.finished));
	json_object_set_new(o, "State", state);
	json_object_set_new(o, "Image", json_string(st.image));
	json_object_set_new(o, "Name", json_string(st.name[0] ? st.name : ""));
	/* the address kiln wrote into the container's /etc/hosts (bridge) */
	char ip[64] = "";
	char *hp = kiln_xasprintf("%s/containers/%s/hosts", root, st.id);
	char *hosts = NULL;
	if (kiln_read_file(hp, 1 << 16, &hosts, NULL, NULL) == 0) {
		char *last = NULL;
		for (char *q = strtok(hosts, "\n"); q; q = strtok(NULL, "\n"))
			last = q;
		if (last && !strncmp(last, "10.", 3))
			snprintf(ip, sizeof(ip), "%.*s", (int)strcspn(last, "\t "), last);
	}
	free(hosts);
	free(hp);
	json_t *ns = json_object();
	json_object_set_new(ns, "IPAddress", json_string(ip));
	json_object_set_new(ns, "Gateway", json_string(ip[0] ? "10.213.37.1" : ""));
	json_object_set_new(ns, "Ports", json_string(st.ports));
	json_object_set_new(o, "NetworkSettings", ns);
	json_t *hc = json_object();
	json_object_set_new(hc, "AutoRemove", json_boolean(st.auto_remove));
	json_object_set_new(o, "HostConfig", hc);
	json_t *cfg = json_object();
	json_object_set_new(cfg, "Image", json_string(st.image));
	json_object_set_new(cfg, "StopSignal", json_string(st.stop_signal[0] ? st.stop_signal : "SIGTERM"));
	json_object_set_new(o, "Config", cfg);
	json_t *arr = json_array();
	json_array_append_new(arr, o);
	char *text = json_dumps(arr, JSON_INDENT(4));
	json_decref(arr);
	printf("%s\n", text);
	free(text);
	return 0;
}

static int cmp_created(const void *a, const void *b)
{
	const struct kiln_container_state *x = a, *y = b;
	return strcmp(y->created, x->created);
}

int kiln_container_list(const char *root, struct kiln_container_state **out, size_t *n,
			struct kiln_err *err)
{
	*out = NULL;
	*n = 0;
	char *dir = kiln_xasprintf("%s/containers", root);
	DIR *d = opendir(dir);
	free(dir);
	if (!d)
		return 0;
	size_t cap = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.' || strlen(e->d_name) != 64)
			continue;
		struct kiln_container_state s;
		if (kiln_container_load(root, e->d_name, &s, NULL) < 0)
			continue;
		if (*n == cap) {
			cap = cap ? cap * 2 : 16;
			*out = kiln_xrealloc(*out, cap * sizeof(**out));
		}
		(*out)[(*n)++] = s;
	}
	closedir(d);
	if (*n)
		qsort(*out, *n, sizeof(**out), cmp_created);
	(void)err;
	return 0;
}

static const struct { const char *name; int sig; } signames[] = {
	{"HUP", SIGHUP}, {"INT", SIGINT}, {"QUIT", SIGQUIT}, {"ILL", SIGILL}, {"TRAP", SIGTRAP},
	{"ABRT", SIGABRT}, {"BUS", SIGBUS}, {"FPE", SIGFPE}, {"KILL", SIGKILL}, {"USR1", SIGUSR1},
	{"SEGV", SIGSEGV}, {"USR2", SIGUSR2}, {"PIPE", SIGPIPE}, {"ALRM", SIGALRM}, {"TERM", SIGTERM},
	{"CHLD", SIGCHLD}, {"CONT", SIGCONT}, {"STOP", SIGSTOP}, {"TSTP", SIGTSTP}, {"TTIN", SIGTTIN},
	{"TTOU", SIGTTOU}, {"URG", SIGURG}, {"XCPU", SIGXCPU}, {"XFSZ", SIGXFSZ}, {"VTALRM", SIGVTALRM},
	{"PROF", SIGPROF}, {"WINCH", SIGWINCH}, {"IO", SIGIO}, {"PWR", SIGPWR}, {"SYS", SIGSYS},
};

int kiln_signal_from_name(const char *name)
{
	if (!name || !name[0])
		return -1;
	if (name[0] >= '0' && name[0] <= '9') {
		char *end;
		long v = strtol(name, &end, 10);
		return (*end || v < 1 || v > 64) ? -1 : (int)v;
	}
	const char *n = name;
	if (!strncasecmp(n, "SIG", 3))
		n += 3;
	for (size_t i = 0; i < sizeof(signames) / sizeof(signames[0]); i++)
		if (!strcasecmp(n, signames[i].name))
			return signames[i].sig;
	return -1;
}

int kiln_container_signal(const struct kiln_container_state *st, int sig, struct kiln_err *err)
{
	if (!kiln_container_running(st))
		return kiln_err_set(err, 0, "container %.12s is not running", st->id);
	if (kill(st->pid, sig) < 0)
		return kiln_err_set(err, errno, "signalling container %.12s", st->id);
	return 0;
}

bool kiln_container_wait_stopped(const char *root, struct kiln_container_state *st, int timeout_ms)
{
	uint64_t end = kiln_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	for (;;) {
		struct kiln_container_state now;
		if (kiln_container_load(root, st->id, &now, NULL) < 0)
			return true;   /* removed (--rm) */
		*st = now;
		/* stopped = the supervisor recorded the exit (or is gone) */
		bool sup_alive = st->supervisor > 0 && !(kill(st->supervisor, 0) < 0 && errno == ESRCH);
		if (strcmp(st->status, "running") != 0 && strcmp(st->status, "created") != 0)
			return true;
		if (!sup_alive && !kiln_container_running(st))
			return true;
		if (kiln_now_ns() >= end)
			return false;
		usleep(10000);
	}
}

void kiln_container_random_name(char *buf, size_t len)
{
	static const char *const adj[] = {"brave", "calm", "eager", "fervent", "gentle", "happy", "jolly",
		"keen", "lucid", "merry", "nifty", "quirky", "serene", "tender", "vibrant", "witty", "zealous",
		"bold", "clever", "daring"};
	static const char *const noun[] = {"turing", "hopper", "lovelace", "ritchie", "thompson", "knuth",
		"dijkstra", "torvalds", "hamilton", "curie", "noether", "euler", "gauss", "kepler", "tesla",
		"darwin", "shannon", "wozniak", "babbage", "pike"};
	unsigned char r[2];
	if (getrandom(r, 2, 0) != 2) {
		r[0] = (unsigned char)getpid();
		r[1] = (unsigned char)(kiln_now_ns() >> 10);
	}
	snprintf(buf, len, "%s_%s", adj[r[0] % 20], noun[r[1] % 20]);
}
