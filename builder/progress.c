/* kiln — build progress output. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "builder/progress.h"
#include "common/util.h"

int kiln_progress_parse(const char *name, enum kiln_progress_mode *out, struct kiln_err *err)
{
	if (!strcmp(name, "auto"))
		*out = KILN_PROGRESS_AUTO;
	else if (!strcmp(name, "plain") || !strcmp(name, "rawjson"))
		*out = KILN_PROGRESS_PLAIN;
	else if (!strcmp(name, "tty"))
		*out = KILN_PROGRESS_TTY;
	else if (!strcmp(name, "quiet"))
		*out = KILN_PROGRESS_QUIET;
	else
		return kiln_err_set(err, 0, "invalid --progress \"%s\" (auto, plain, tty or quiet)", name);
	return 0;
}

void kiln_progress_init(struct kiln_progress *p, enum kiln_progress_mode mode, bool quiet, FILE *out)
{
	memset(p, 0, sizeof(*p));
	p->out = out ? out : stderr;
	if (quiet)
		mode = KILN_PROGRESS_QUIET;
	if (mode == KILN_PROGRESS_AUTO)
		mode = isatty(fileno(p->out)) ? KILN_PROGRESS_TTY : KILN_PROGRESS_PLAIN;
	p->mode = mode;
	p->next_id = 1;
	p->relay_fd = -1;
	p->build_start_ns = kiln_now_ns();
	pthread_mutex_init(&p->lock, NULL);
}

void kiln_progress_destroy(struct kiln_progress *p)
{
	kiln_progress_relay_end(p);
	pthread_mutex_destroy(&p->lock);
}

static double secs(uint64_t ns)
{
	return (double)ns / 1e9;
}

void kiln_progress_step(struct kiln_progress *p, const char *label, const char *text)
{
	p->cur_id = p->next_id++;
	p->step_start_ns = kiln_now_ns();
	if (p->mode == KILN_PROGRESS_QUIET)
		return;
	pthread_mutex_lock(&p->lock);
	/* one line: newlines of heredocs shown as the first line only */
	const char *nl = strchr(text, '\n');
	int len = nl ? (int)(nl - text) : (int)strlen(text);
	if (p->mode == KILN_PROGRESS_TTY)
		fprintf(p->out, "\033[1m=> [%s] %.*s\033[0m\n", label, len, text);
	else
		fprintf(p->out, "#%d [%s] %.*s\n", p->cur_id, label, len, text);
	fflush(p->out);
	pthread_mutex_unlock(&p->lock);
}

void kiln_progress_cached(struct kiln_progress *p)
{
	if (p->mode == KILN_PROGRESS_QUIET)
		return;
	pthread_mutex_lock(&p->lock);
	if (p->mode == KILN_PROGRESS_TTY)
		fprintf(p->out, "=> CACHED\n");
	else
		fprintf(p->out, "#%d CACHED\n", p->cur_id);
	fflush(p->out);
	pthread_mutex_unlock(&p->lock);
}

void kiln_progress_done(struct kiln_progress *p)
{
	if (p->mode == KILN_PROGRESS_QUIET)
		return;
	pthread_mutex_lock(&p->lock);
	double s = secs(kiln_now_ns() - p->step_start_ns);
	if (p->mode == KILN_PROGRESS_TTY)
		fprintf(p->out, "=> DONE %.1fs\n", s);
	else
		fprintf(p->out, "#%d DONE %.1fs\n", p->cur_id, s);
	fflush(p->out);
	pthread_mutex_unlock(&p->lock);
}

void kiln_progress_error(struct kiln_progress *p, const char *msg)
{
	if (p->mode == KILN_PROGRESS_QUIET)
		return;
	pthread_mutex_lock(&p->lock);
	if (p->mode == KILN_PROGRESS_TTY)
		fprintf(p->out, "=> ERROR: %s\n", msg);
	else
		fprintf(p->out, "#%d ERROR: %s\n", p->cur_id, msg);
	fflush(p->out);
	pthread_mutex_unlock(&p->lock);
}

static void vline(struct kiln_progress *p, int id, const char *fmt, va_list ap)
{
	pthread_mutex_lock(&p->lock);
	if (p->mode == KILN_PROGRESS_TTY)
		fputs("=> ", p->out);
	else
		fprintf(p->out, "#%d ", id);
	vfprintf(p->out, fmt, ap);
	fputc('\n', p->out);
	fflush(p->out);
	pthread_mutex_unlock(&p->lock);
}

void kiln_progress_info(struct kiln_progress *p, const char *fmt, ...)
{
	if (p->mode == KILN_PROGRESS_QUIET)
		return;
	va_list ap;
	va_start(ap, fmt);
	vline(p, p->cur_id, fmt, ap);
	va_end(ap);
}

void kiln_progress_note(struct kiln_progress *p, const char *fmt, ...)
{
	int id = p->next_id++;
	p->cur_id = id;
	p->step_start_ns = kiln_now_ns();
	if (p->mode == KILN_PROGRESS_QUIET)
		return;
	va_list ap;
	va_start(ap, fmt);
	vline(p, id, fmt, ap);
	va_end(ap);
}

static void relay_write_line(struct kiln_progress *p, int out, const char *line, size_t len)
{
	char head[64];
	int h = snprintf(head, sizeof(head), "#%d %.3f ", p->cur_id, secs(kiln_now_ns() - p->step_start_ns));
	kiln_write_all(out, head, (size_t)h);
	kiln_write_all(out, line, len);
	kiln_write_all(out, "\n", 1);
}

/* The relay runs in a forked process (not a thread: the sandbox clones the
 * calling process, and a thread holding a libc lock at that moment would
 * deadlock the container's setup). */
static void relay_main(struct kiln_progress *p, int in)
{
	int out = fileno(p->out);
	char buf[8192];
	char *line = malloc(65536);
	size_t ll = 0;
	for (;;) {
		ssize_t r = read(in, buf, sizeof(buf));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		if (p->mode == KILN_PROGRESS_QUIET)
			continue;
		if (p->mode == KILN_PROGRESS_TTY || !line) {
			kiln_write_all(out, buf, (size_t)r);
			continue;
		}
		for (ssize_t i = 0; i < r; i++) {
			if (buf[i] == '\n' || ll == 65536) {
				relay_write_line(p, out, line, ll);
				ll = 0;
				if (buf[i] == '\n')
					continue;
			}
			line[ll++] = buf[i];
		}
	}
	if (ll && p->mode == KILN_PROGRESS_PLAIN)
		relay_write_line(p, out, line, ll);
	_exit(0);
}

int kiln_progress_relay_begin(struct kiln_progress *p)
{
	kiln_progress_relay_end(p);
	int fds[2];
	if (pipe2(fds, O_CLOEXEC) < 0)
		return -1;
	fflush(p->out);
	pid_t pid = fork();
	if (pid < 0) {
		close(fds[0]);
		close(fds[1]);
		return -1;
	}
	if (pid == 0) {
		close(fds[1]);
		signal(SIGINT, SIG_IGN);
		relay_main(p, fds[0]);
	}
	close(fds[0]);
	p->relay_pid = pid;
	p->relay_fd = fds[1];
	return p->relay_fd;
}

void kiln_progress_relay_end(struct kiln_progress *p)
{
	if (p->relay_fd >= 0) {
		close(p->relay_fd);
		p->relay_fd = -1;
	}
	if (p->relay_pid > 0) {
		/* ECHILD: someone (the sandbox's waitpid(-1)) reaped it: it has exited */
		while (waitpid(p->relay_pid, NULL, 0) < 0 && errno == EINTR)
			;
		p->relay_pid = 0;
	}
}
