/* kiln — containers that outlive the command that started them: state under
 * <root>/containers/<id>/ (state.json, log, hosts files, the writable
 * snapshot), looked up by id, id prefix or name. */
#ifndef KILN_RUNTIME_CONTAINER_H
#define KILN_RUNTIME_CONTAINER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/err.h"

struct kiln_container_state {
	char id[65];
	char name[128];
	char image[256];
	char command[512];      /* for ps: the argv joined by spaces */
	char status[16];        /* "created", "running", "exited" */
	char error[128];        /* why it ended other than by its own exit ("supervisor died") */
	pid_t pid;              /* container main process (host pid), 0 when not running */
	pid_t supervisor;       /* the supervising process, 0 when none */
	int exit_code;
	bool oom_killed;
	char stop_signal[16];   /* from the image config, "" = SIGTERM */
	bool auto_remove;       /* --rm */
	char created[40], started[40], finished[40];  /* RFC 3339 UTC */
	char ports[256];        /* "0.0.0.0:8080->80/tcp, ..." */
};

/* Generate a fresh 64-hex id. */
void kiln_container_new_id(char out[65]);

/* Directory of a container ("<root>/containers/<id>"); caller frees. */
char *kiln_container_dir(const char *root, const char *id);

/* Load/store state.json (stored atomically).  Loading a "running"
 * container whose supervisor died (it holds no lock any more: SIGKILL, a
 * crash) records it as exited with code 137 (its PID 1 died with it, of
 * SIGKILL) and error "supervisor died", as docker shows a container whose
 * shim died. */
int kiln_container_load(const char *root, const char *id, struct kiln_container_state *st,
			struct kiln_err *err);
int kiln_container_save(const char *root, const struct kiln_container_state *st,
			struct kiln_err *err);

/* Find a container by full id, unique id prefix or name; fills st. */
int kiln_container_find(const char *root, const char *ref, struct kiln_container_state *st,
			struct kiln_err *err);

/* Called by a container's supervisor before it starts the container: a
 * lock on <dir>/supervisor.lock held as long as this process lives (a POSIX
 * record lock: dropped by the kernel at its death, not inherited by its
 * children).  Returns 0 or -1. */
int kiln_container_hold(const char *root, const char *id, struct kiln_err *err);

/* True when st->pid is alive and still the container (pid reuse checked). */
bool kiln_container_running(const struct kiln_container_state *st);

/* All containers (sorted newest first); caller frees *out. */
int kiln_container_list(const char *root, struct kiln_container_state **out, size_t *n,
			struct kiln_err *err);

/* "SIGTERM", "TERM", "15" -> 15; -1 when unknown. */
int kiln_signal_from_name(const char *name);

/* Send sig to the container's main process; 0, or -1 when it is not running. */
int kiln_container_signal(const struct kiln_container_state *st, int sig, struct kiln_err *err);

/* Wait up to timeout_ms for the container to stop (its supervisor records
 * the exit); true when it stopped.  st is reloaded. */
bool kiln_container_wait_stopped(const char *root, struct kiln_container_state *st, int timeout_ms);

/* A docker-like random name ("brave_turing"). */
void kiln_container_random_name(char *buf, size_t len);

/* Print docker-like JSON for container NAME (id, prefix or name) on stdout.
 * Returns 0, or 1 when no such container (nothing printed, message on stderr
 * unless quiet).  Used by `kiln inspect` when NAME is not an image. */
int kiln_container_inspect_cmd(const char *name);

#endif
