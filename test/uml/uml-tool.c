// uml-tool: the few things a user-mode-Linux init script needs that a plain Debian host may not have
// (kmod's insmod is not always installed; systemd's poweroff wants a running systemd). It runs inside
// UML from the hostfs root, so it is an ordinary host executable (built by test/uml/helpers.ts with gcc
// into build/tools/).
//
//   uml-tool insmod FILE.ko...          finit_module(2) each file in order (dependencies first)
//   uml-tool poweroff                   sync(2), then reboot(2) RB_POWER_OFF: UML exits with status 0
//   uml-tool randread DEV BS COUNT SEED COUNT reads of BS bytes at BS-aligned offsets drawn uniformly
//                                       (xorshift64*, seeded) from the whole of DEV, O_DIRECT, one at a
//                                       time (queue depth 1); prints "randread ops=N bytes=B ns=T"
//                                       (CLOCK_MONOTONIC around the loop) and exits 1 on a short read
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/reboot.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int insmod(int n, char **files) {
  for (int i = 0; i < n; i++) {
    int fd = open(files[i], O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      fprintf(stderr, "uml-tool insmod: %s: %s\n", files[i], strerror(errno));
      return 1;
    }
    if (syscall(SYS_finit_module, fd, "", 0) != 0 && errno != EEXIST) {
      fprintf(stderr, "uml-tool insmod: %s: %s\n", files[i], strerror(errno));
      return 1;
    }
    close(fd);
  }
  return 0;
}

static uint64_t xorshift64s(uint64_t *s) {
  uint64_t x = *s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * 0x2545F4914F6CDD1DULL;
}

static int randread(const char *dev, long bs, long count, uint64_t seed) {
  if (bs <= 0 || bs % 512 || count <= 0) {
    fprintf(stderr, "uml-tool randread: BS must be a positive multiple of 512 and COUNT positive\n");
    return 2;
  }
  int fd = open(dev, O_RDONLY | O_DIRECT | O_CLOEXEC);
  if (fd < 0) {
    fprintf(stderr, "uml-tool randread: %s: %s\n", dev, strerror(errno));
    return 1;
  }
  uint64_t size = 0;
  if (ioctl(fd, BLKGETSIZE64, &size) != 0 || size < (uint64_t)bs) {
    fprintf(stderr, "uml-tool randread: %s: cannot get a size of at least %ld bytes\n", dev, bs);
    return 1;
  }
  void *buf;
  if (posix_memalign(&buf, 4096, (size_t)bs) != 0) return 1;
  uint64_t blocks = size / (uint64_t)bs, s = seed ? seed : 0x9E3779B97F4A7C15ULL, bytes = 0;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (long i = 0; i < count; i++) {
    off_t off = (off_t)((xorshift64s(&s) % blocks) * (uint64_t)bs);
    ssize_t r = pread(fd, buf, (size_t)bs, off);
    if (r != bs) {
      fprintf(stderr, "uml-tool randread: pread at %lld: %s\n", (long long)off, r < 0 ? strerror(errno) : "short read");
      return 1;
    }
    bytes += (uint64_t)r;
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  uint64_t ns = (uint64_t)(t1.tv_sec - t0.tv_sec) * 1000000000ULL + (uint64_t)t1.tv_nsec - (uint64_t)t0.tv_nsec;
  printf("randread ops=%ld bytes=%" PRIu64 " ns=%" PRIu64 "\n", count, bytes, ns);
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 3 && strcmp(argv[1], "insmod") == 0) return insmod(argc - 2, argv + 2);
  if (argc == 2 && strcmp(argv[1], "poweroff") == 0) {
    sync();
    reboot(RB_POWER_OFF);
    perror("uml-tool poweroff");
    return 1;
  }
  if (argc == 6 && strcmp(argv[1], "randread") == 0)
    return randread(argv[2], atol(argv[3]), atol(argv[4]), strtoull(argv[5], NULL, 0));
  fprintf(stderr, "usage: uml-tool insmod FILE.ko... | poweroff | randread DEV BS COUNT SEED\n");
  return 2;
}
