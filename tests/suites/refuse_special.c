/*
 * refuse_special CLASSES -- PROGRAM [ARGS...]
 *
 * Runs PROGRAM (and everything it starts) with the kernel refusing, with EPERM, what a VMFS
 * mount refuses: making FIFOs and device nodes (mknod/mknodat of anything but a regular file),
 * hard links (link/linkat) and binding sockets (bind: a Unix socket is a node on the filesystem).
 * CLASSES is a comma list of "mknod", "link", "bind" saying which of the three to refuse.
 *
 * Why: pjdfstest on a filesystem that supports everything (ext4), run under this, fails exactly
 * the subtests that a filesystem without those node kinds must fail, cascades included (the steps
 * after a node that could not be made).  That is how the committed list of expected pjdfstest
 * failures is derived (tests/suites/pjdfstest_reference.py) instead of being written by hand.
 */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#define OUR_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define OUR_ARCH AUDIT_ARCH_AARCH64
#else
#error "refuse_special knows x86_64 and aarch64 only"
#endif

#define ARG_LO(n) (offsetof(struct seccomp_data, args) + 8 * (n))
#define REFUSE (SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA))

static struct sock_filter prog[64];
static unsigned short len;

static void emit(struct sock_filter insn)
{
	prog[len++] = insn;
}

/* if nr == sysno: refuse (mode_arg < 0) or refuse unless the file type in args[mode_arg] is
 * regular (S_IFREG or 0, as mknod allows); else fall through to the next check */
static void check(int sysno, int mode_arg)
{
	if (mode_arg < 0) {
		emit((struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, sysno, 0, 1));
		emit((struct sock_filter)BPF_STMT(BPF_RET | BPF_K, REFUSE));
		return;
	}
	emit((struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, sysno, 0, 6));
	emit((struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LO(mode_arg)));
	emit((struct sock_filter)BPF_STMT(BPF_ALU | BPF_AND | BPF_K, S_IFMT));
	emit((struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 2, 0));
	emit((struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, S_IFREG, 1, 0));
	emit((struct sock_filter)BPF_STMT(BPF_RET | BPF_K, REFUSE));
	emit((struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
}

int main(int argc, char **argv)
{
	if (argc < 4 || strcmp(argv[2], "--") != 0) {
		fprintf(stderr, "usage: %s mknod,link,bind -- PROGRAM [ARGS...]\n", argv[0]);
		return 2;
	}
	const char *classes = argv[1];
	emit((struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)));
	emit((struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, OUR_ARCH, 1, 0));
	emit((struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
	emit((struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)));
	if (strstr(classes, "mknod")) {
#ifdef __NR_mknod
		check(__NR_mknod, 1);
		emit((struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)));
#endif
		check(__NR_mknodat, 2);
		emit((struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)));
	}
	if (strstr(classes, "link")) {
#ifdef __NR_link
		check(__NR_link, -1);
#endif
		check(__NR_linkat, -1);
	}
	if (strstr(classes, "bind"))
		check(__NR_bind, -1);
	emit((struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));

	struct sock_fprog fprog = {.len = len, .filter = prog};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog) != 0) {
		perror("refuse_special: seccomp");
		return 2;
	}
	execvp(argv[3], argv + 3);
	perror(argv[3]);
	return 127;
}
