/* Unit test of the sweep of cgroups whose owner died (runtime/cgroup_gc.c),
 * on a directory tree standing in for a cgroup hierarchy: owners are
 * processes holding a lock, killed to make them dead. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/util.h"
#include "runtime/cgroup_gc.h"

static char *tmpdir(void)
{
	char t[] = "/tmp/kiln-test-cggc-XXXXXX";
	assert_non_null(mkdtemp(t));
	return kiln_xstrdup(t);
}

/* A child that holds a POSIX lock on lockdir/id until it is killed. */
static pid_t hold_lock(const char *lockdir, const char *id)
{
	int sync[2];
	assert_int_equal(pipe(sync), 0);
	pid_t pid = fork();
	if (pid == 0) {
		close(sync[0]);
		char path[4096];
		snprintf(path, sizeof(path), "%s/%s", lockdir, id);
		int fd = open(path, O_RDWR | O_CREAT, 0600);
		struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
		if (fd < 0 || fcntl(fd, F_SETLK, &fl) < 0)
			_exit(1);
		if (write(sync[1], "x", 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	close(sync[1]);
	char c;
	assert_int_equal(read(sync[0], &c, 1), 1);
	close(sync[0]);
	return pid;
}

static bool exists(const char *dir, const char *name)
{
	char p[4096];
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	return access(p, F_OK) == 0;
}

static void test_cgroup_gc(void **state)
{
	(void)state;
	char *top = tmpdir();
	char *mnt = kiln_xasprintf("%s/mnt", top), *locks = kiln_xasprintf("%s/locks", top);
	char *own = kiln_xasprintf("%s/own", mnt);
	mkdir(mnt, 0700);
	mkdir(locks, 0700);
	mkdir(own, 0700);
	/* alive: owner holds its lock; dead: lock file, nobody holds it (with a
	 * child cgroup); unowned: no lock file, just made; another: not kiln's */
	const char *alive = "kiln-aaaa", *dead = "kiln-dddd", *unowned = "kiln-eeee";
	char *p;
	mkdir((p = kiln_xasprintf("%s/%s", own, alive)), 0700), free(p);
	mkdir((p = kiln_xasprintf("%s/%s", own, dead)), 0700), free(p);
	mkdir((p = kiln_xasprintf("%s/%s/sub", own, dead)), 0700), free(p);
	mkdir((p = kiln_xasprintf("%s/%s", own, unowned)), 0700), free(p);
	mkdir((p = kiln_xasprintf("%s/other", own)), 0700), free(p);
	close(open((p = kiln_xasprintf("%s/dddd", locks)), O_CREAT | O_RDWR, 0600)), free(p);
	pid_t holder = hold_lock(locks, "aaaa");
	char *mountinfo = kiln_xasprintf("30 20 0:26 / %s rw,relatime shared:9 - cgroup cgroup rw,memory\n"
					 "31 20 0:27 / /nonexistent rw - cgroup cgroup rw,pids\n", mnt);
	const char *cgroup = "4:memory:/own\n3:pids:/own\n";

	assert_int_equal(kiln_cgroup_gc_sweep_in(cgroup, mountinfo, locks), 1);
	assert_true(exists(own, alive));       /* its owner lives */
	assert_false(exists(own, dead));       /* its owner died: gone, with its child */
	assert_false(exists(locks, "dddd"));   /* and its lock file */
	assert_true(exists(own, unowned));     /* too young to judge */
	assert_true(exists(own, "other"));
	assert_true(exists(locks, "aaaa"));

	/* the owner dies: the next sweep takes its cgroup */
	kill(holder, SIGKILL);
	waitpid(holder, NULL, 0);
	assert_int_equal(kiln_cgroup_gc_sweep_in(cgroup, mountinfo, locks), 1);
	assert_false(exists(own, alive));
	assert_false(exists(locks, "aaaa"));
	assert_true(exists(own, unowned));

	kiln_rm_rf(top, NULL);
	free(mountinfo);
	free(own);
	free(mnt);
	free(locks);
	free(top);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cgroup_gc),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
