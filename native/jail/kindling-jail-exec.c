// kindling-jail-exec: the part of `kindling jail` that a multi-threaded Node process cannot do for
// itself (unshare(CLONE_NEWNS) needs an unshared fs struct, i.e. a single-threaded caller; setuid in
// Node would change one thread's credentials only). src/jail/jail.ts decides everything — which files
// appear where, which limits, which ids — and passes it here as flags; this program only performs it,
// in this order, and execs the program after `--`:
//
//   1. --netns PATH                setns(open(PATH), CLONE_NEWNET)
//   2. --cgroup-procs FILE...      write our pid into each cgroup.procs (before any privilege is dropped)
//   3. unshare(CLONE_NEWNS [| CLONE_NEWPID with --new-pid-ns]); with a new PID namespace, fork: the
//      child is PID 1 there and goes on, the parent forwards SIGTERM/SIGINT/SIGHUP/SIGQUIT to it and
//      exits with its status (128+N for a signal)
//   4. mount propagation private (MS_REC|MS_PRIVATE on /), --root DIR bind-mounted onto itself
//   5. --dir PATH MODE             directories inside the root (mkdir -p, chmod MODE, owned by --uid/--gid)
//      --bind SRC DST ro|rw        bind mounts (DST created as an empty file or directory like SRC),
//                                  remounted nosuid,nodev and read-only for ro
//      --dev PATH MAJ MIN          character devices (mode 0660, owned by --uid/--gid)
//      --symlink TARGET PATH       symbolic links
//      (with --new-pid-ns a fresh /proc is mounted)
//   6. pivot_root(".", ".") in the root and the old root detached (pivot_root(2)'s recipe), chdir /
//   7. --rlimit RESOURCE VALUE     setrlimit (soft = hard = VALUE); RESOURCE is nofile or fsize
//   8. setgroups(0), setresgid(--gid), setresuid(--uid): leaving uid 0 clears every capability (no
//      SECBIT_KEEP_CAPS), the ambient set is cleared, PR_SET_NO_NEW_PRIVS set
//   9. --daemonize                 setsid(), stdin/stdout/stderr to /dev/null (inside the jail)
//  10. execv(PROG, ARGS)
//
// Any failure prints one line `kindling jail: STEP: strerror` and exits 1 before the program runs.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_ITEMS 256

static void die(const char* step, const char* what) {
  fprintf(stderr, "kindling jail: %s%s%s: %s\n", step, what ? " " : "", what ? what : "", strerror(errno));
  exit(1);
}

static void usage(const char* why) {
  fprintf(stderr, "kindling jail: kindling-jail-exec: %s\n", why);
  exit(1);
}

struct bind { const char *src, *dst; int ro; };
struct dev { const char* path; unsigned maj, min; };
struct link { const char *target, *path; };
struct dir { const char* path; mode_t mode; };
struct lim { int res; unsigned long long value; };

static char* joinp(const char* root, const char* path) {
  size_t n = strlen(root) + strlen(path) + 2;
  char* s = malloc(n);
  if (!s) usage("out of memory");
  snprintf(s, n, "%s/%s", root, path[0] == '/' ? path + 1 : path);
  return s;
}

static void mkdirs(const char* path, mode_t mode) {
  char* p = strdup(path);
  for (char* s = p + 1; *s; s++) {
    if (*s != '/') continue;
    *s = 0;
    if (mkdir(p, 0755) != 0 && errno != EEXIST) die("mkdir", p);
    *s = '/';
  }
  if (mkdir(p, mode) != 0 && errno != EEXIST) die("mkdir", p);
  free(p);
}

static unsigned long long number(const char* s) {
  char* end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || *end || end == s) usage("a number was expected");
  return v;
}

static pid_t child = -1;
static void forward(int sig) {
  if (child > 0) kill(child, sig);
}

int main(int argc, char** argv) {
  const char *root = NULL, *netns = NULL;
  int newPid = 0, daemonize = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  int haveIds = 0;
  struct bind binds[MAX_ITEMS];
  struct dev devs[MAX_ITEMS];
  struct link links[MAX_ITEMS];
  struct dir dirs[MAX_ITEMS];
  struct lim lims[8];
  const char* procs[16];
  int nb = 0, nd = 0, nl = 0, ndir = 0, nlim = 0, nprocs = 0;
  int i = 1;
  for (; i < argc; i++) {
    const char* a = argv[i];
    int left = argc - i - 1;
    if (!strcmp(a, "--")) { i++; break; }
    if (!strcmp(a, "--root") && left >= 1) root = argv[++i];
    else if (!strcmp(a, "--netns") && left >= 1) netns = argv[++i];
    else if (!strcmp(a, "--new-pid-ns")) newPid = 1;
    else if (!strcmp(a, "--daemonize")) daemonize = 1;
    else if (!strcmp(a, "--uid") && left >= 1) { uid = (uid_t)number(argv[++i]); haveIds |= 1; }
    else if (!strcmp(a, "--gid") && left >= 1) { gid = (gid_t)number(argv[++i]); haveIds |= 2; }
    else if (!strcmp(a, "--bind") && left >= 3 && nb < MAX_ITEMS) {
      binds[nb].src = argv[i + 1]; binds[nb].dst = argv[i + 2]; binds[nb].ro = !strcmp(argv[i + 3], "ro");
      if (!binds[nb].ro && strcmp(argv[i + 3], "rw")) usage("--bind SRC DST ro|rw");
      nb++; i += 3;
    } else if (!strcmp(a, "--dev") && left >= 3 && nd < MAX_ITEMS) {
      devs[nd].path = argv[i + 1]; devs[nd].maj = (unsigned)number(argv[i + 2]); devs[nd].min = (unsigned)number(argv[i + 3]);
      nd++; i += 3;
    } else if (!strcmp(a, "--symlink") && left >= 2 && nl < MAX_ITEMS) {
      links[nl].target = argv[i + 1]; links[nl].path = argv[i + 2]; nl++; i += 2;
    } else if (!strcmp(a, "--dir") && left >= 2 && ndir < MAX_ITEMS) {
      dirs[ndir].path = argv[i + 1]; dirs[ndir].mode = (mode_t)strtoul(argv[i + 2], NULL, 8); ndir++; i += 2;
    } else if (!strcmp(a, "--rlimit") && left >= 2 && nlim < 8) {
      const char* r = argv[i + 1];
      if (!strcmp(r, "nofile")) lims[nlim].res = RLIMIT_NOFILE;
      else if (!strcmp(r, "fsize")) lims[nlim].res = RLIMIT_FSIZE;
      else usage("--rlimit nofile|fsize VALUE");
      lims[nlim].value = number(argv[i + 2]); nlim++; i += 2;
    } else if (!strcmp(a, "--cgroup-procs") && left >= 1 && nprocs < 16) procs[nprocs++] = argv[++i];
    else usage("unknown or incomplete flag");
  }
  if (!root || haveIds != 3 || i >= argc) usage("needs --root DIR --uid N --gid N -- PROG ARGS...");
  if (uid == 0 || gid == 0) usage("refusing to run the jailed program as uid or gid 0");
  char** prog = argv + i;

  if (netns) {
    int fd = open(netns, O_RDONLY | O_CLOEXEC);
    if (fd < 0) die("open --netns", netns);
    if (setns(fd, CLONE_NEWNET) != 0) die("setns", netns);
    close(fd);
  }
  for (int k = 0; k < nprocs; k++) {
    int fd = open(procs[k], O_WRONLY | O_CLOEXEC);
    if (fd < 0) die("open", procs[k]);
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%d\n", (int)getpid());
    if (write(fd, buf, (size_t)n) != n) die("write", procs[k]);
    close(fd);
  }
  if (unshare(CLONE_NEWNS | (newPid ? CLONE_NEWPID : 0)) != 0) die("unshare", newPid ? "(mount, pid)" : "(mount)");
  if (newPid) {
    child = fork();
    if (child < 0) die("fork", NULL);
    if (child > 0) {
      struct sigaction sa;
      memset(&sa, 0, sizeof sa);
      sa.sa_handler = forward;
      int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT};
      for (unsigned k = 0; k < sizeof sigs / sizeof sigs[0]; k++) sigaction(sigs[k], &sa, NULL);
      int st;
      while (waitpid(child, &st, 0) < 0)
        if (errno != EINTR) die("waitpid", NULL);
      return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    }
  }
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) die("mount --make-rprivate", "/");
  if (mount(root, root, NULL, MS_BIND | MS_REC, NULL) != 0) die("bind mount", root);
  for (int k = 0; k < ndir; k++) {
    char* p = joinp(root, dirs[k].path);
    mkdirs(p, dirs[k].mode);
    if (chmod(p, dirs[k].mode) != 0) die("chmod", p);
    if (chown(p, uid, gid) != 0) die("chown", p);
    free(p);
  }
  for (int k = 0; k < nb; k++) {
    struct stat st;
    if (stat(binds[k].src, &st) != 0) die("stat", binds[k].src);
    char* dst = joinp(root, binds[k].dst);
    char* parent = strdup(dst);
    char* slash = strrchr(parent, '/');
    if (slash && slash != parent) { *slash = 0; mkdirs(parent, 0755); }
    free(parent);
    if (S_ISDIR(st.st_mode)) {
      if (mkdir(dst, 0755) != 0 && errno != EEXIST) die("mkdir", dst);
    } else {
      int fd = open(dst, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
      if (fd < 0) die("create", dst);
      close(fd);
    }
    if (mount(binds[k].src, dst, NULL, MS_BIND | MS_REC, NULL) != 0) die("bind mount", binds[k].src);
    unsigned long fl = MS_BIND | MS_REMOUNT | MS_NOSUID | (binds[k].ro ? MS_RDONLY : 0);
    if (!S_ISDIR(st.st_mode)) fl |= MS_NODEV;
    if (mount(NULL, dst, NULL, fl, NULL) != 0) die("remount", dst);
    free(dst);
  }
  for (int k = 0; k < nd; k++) {
    char* p = joinp(root, devs[k].path);
    if (mknod(p, S_IFCHR | 0660, makedev(devs[k].maj, devs[k].min)) != 0 && errno != EEXIST) die("mknod", p);
    if (chown(p, uid, gid) != 0) die("chown", p);
    free(p);
  }
  for (int k = 0; k < nl; k++) {
    char* p = joinp(root, links[k].path);
    if (symlink(links[k].target, p) != 0 && errno != EEXIST) die("symlink", p);
    free(p);
  }
  if (newPid) {
    char* p = joinp(root, "/proc");
    mkdirs(p, 0555);
    if (mount("proc", p, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0) die("mount proc", p);
    free(p);
  }
  if (chdir(root) != 0) die("chdir", root);
  if (syscall(SYS_pivot_root, ".", ".") != 0) die("pivot_root", root);
  if (umount2(".", MNT_DETACH) != 0) die("umount2", "old root");
  if (chdir("/") != 0) die("chdir", "/");
  for (int k = 0; k < nlim; k++) {
    struct rlimit rl = {lims[k].value, lims[k].value};
    if (setrlimit(lims[k].res, &rl) != 0) die("setrlimit", NULL);
  }
  if (setgroups(0, NULL) != 0) die("setgroups", NULL);
  if (setresgid(gid, gid, gid) != 0) die("setresgid", NULL);
  if (setresuid(uid, uid, uid) != 0) die("setresuid", NULL);
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) die("prctl(PR_CAP_AMBIENT_CLEAR_ALL)", NULL);
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) die("prctl(PR_SET_NO_NEW_PRIVS)", NULL);
  if (daemonize) {
    if (setsid() < 0) die("setsid", NULL);
    int fd = open("/dev/null", O_RDWR);
    if (fd < 0) die("open", "/dev/null");
    for (int k = 0; k < 3; k++)
      if (dup2(fd, k) < 0) die("dup2", NULL);
    if (fd > 2) close(fd);
  }
  execv(prog[0], prog);
  die("execv", prog[0]);
  return 1;
}
