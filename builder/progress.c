/* kiln — build progress output. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
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
	p->relay_read = -1;
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
	if (p->mode == KILN_PROGRESS_QUIET)
		return;
	va_list ap;
	va_start(ap, fmt);
	vline(p, id, fmt, ap);
	va_end(ap);
}

static void *relay_main(void *arg)
{
	struct kiln_progress *p = arg;
	char buf[8192];
	struct kiln_buf line = {0};
	for (;;) {
		ssize_t r = read(p->relay_read, buf, sizeof(buf));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		if (p->mode == KILN_PROGRESS_QUIET)
			continue;
		if (p->mode == KILN_PROGRESS_TTY) {
			pthread_mutex_lock(&p->lock);
			fwrite(buf, 1, (size_t)r, p->out);
			fflush(p->out);
			pthread_mutex_unlock(&p->lock);
			continue;
		}
		for (ssize_t i = 0; i < r; i++) {
			if (buf[i] != '\n') {
				kiln_buf_putc(&line, buf[i]);
				continue;
			}
			pthread_mutex_lock(&p->lock);
			fprintf(p->out, "#%d %.3f %s\n", p->cur_id, secs(kiln_now_ns() - p->step_start_ns),
				line.data ? line.data : "");
			fflush(p->out);
			pthread_mutex_unlock(&p->lock);
			line.len = 0;
			if (line.data)
				line.data[0] = 0;
		}
	}
	if (line.len && p->mode == KILN_PROGRESS_PLAIN) {
		pthread_mutex_lock(&p->lock);
		fprintf(p->out, "#%d %.3f %s\n", p->cur_id, secs(kiln_now_ns() - p->step_start_ns), line.data);
		fflush(p->out);
		pthread_mutex_unlock(&p->lock);
	}
	kiln_buf_free(&line);
	return NULL;
}

int kiln_progress_relay_begin(struct kiln_progress *p)
{
	kiln_progress_relay_end(p);
	int fds[2];
	if (pipe2(fds, O_CLOEXEC) < 0)
		return -1;
	p->relay_read = fds[0];
	p->relay_fd = fds[1];
	if (pthread_create(&p->relay_thread, NULL, relay_main, p) != 0) {
		close(fds[0]);
		close(fds[1]);
		p->relay_fd = p->relay_read = -1;
		return -1;
	}
	p->relay_running = true;
	return p->relay_fd;
}

void kiln_progress_relay_end(struct kiln_progress *p)
{
	if (p->relay_fd >= 0) {
		close(p->relay_fd);
		p->relay_fd = -1;
	}
	if (p->relay_running) {
		pthread_join(p->relay_thread, NULL);
		p->relay_running = false;
	}
	if (p->relay_read >= 0) {
		close(p->relay_read);
		p->relay_read = -1;
	}
}
