// kindling-agent: the guest exec agent (static Linux program; protocol: docs/agent-protocol.md).
//
// Listens on AF_VSOCK (port 10789 by default, any CID), or for host-only tests on a Unix socket
// (`--unix PATH`) or an inherited listening socket (`--fd N`). One poll(2) loop, every fd non-blocking
// and close-on-exec; several connections, and several processes and file transfers per connection.
//
// Framing (all integers little-endian): a 12-byte header { u32 len; u8 type; u8 rsv[3] = 0; u32 id }
// then `len` payload bytes, len <= AGENT_MAX_PAYLOAD. A header with len too large or a non-zero
// reserved byte, an unknown type, a malformed payload or data beyond the credit the agent granted is a
// protocol error: the agent sends ERROR(id 0) and closes that connection only, killing its processes.
//
// Flow control, so neither side buffers without bound:
//   - process output and read-file data: the client grants credit per stream (WINDOW); the agent
//     reads a process's stdout/stderr fd only while that stream has credit and the connection's
//     output buffer is under AGENT_OUT_HIGH.
//   - process stdin: the agent grants credit (STDIN_WINDOW, AGENT_STDIN_BUF at start, then as it
//     writes bytes to the child); data beyond it is a protocol error.
//   - the agent stops reading a connection while its output buffer is over AGENT_OUT_HIGH (a client
//     that sends requests and never reads their replies stalls itself, not the agent).
//   - write-file data is written to the file synchronously as frames arrive (socket back-pressure).
//
// `--selftest-parse`: reads bytes from stdin, feeds them through the same frame parser (in the
// chunk sizes given by the first stdin byte) and EXEC payload decoder, and prints what it decoded,
// so a host-side fast-check property can compare it with the TypeScript codec (test/unit/agent-codec).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#define AGENT_VERSION 1
#define AGENT_DEFAULT_PORT 10789
#define AGENT_HDR 12
#define AGENT_MAX_PAYLOAD (1u << 20)
#define AGENT_CHUNK 65536
#define AGENT_OUT_HIGH (256 * 1024)
#define AGENT_STDIN_BUF 65536
#define MAX_CONNS 64
#define MAX_OPS 64

// client -> agent
#define T_EXEC 0x10
#define T_STDIN 0x11
#define T_SIGNAL 0x12
#define T_WINDOW 0x13
#define T_RESIZE 0x14
#define T_WRITE_FILE 0x20
#define T_WRITE_DATA 0x21
#define T_READ_FILE 0x22
// agent -> client
#define T_HELLO 0x01
#define T_STARTED 0x30
#define T_STDOUT 0x31
#define T_STDERR 0x32
#define T_STDIN_WINDOW 0x33
#define T_EXIT 0x34
#define T_FILE_INFO 0x35
#define T_FILE_DATA 0x36
#define T_DONE 0x37
#define T_ERROR 0x3f

#define EXEC_F_TTY 1u
#define EXEC_F_CLEAR_ENV 2u
#define EXEC_F_KNOWN (EXEC_F_TTY | EXEC_F_CLEAR_ENV)

static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static void wr32(uint8_t *p, uint32_t v) { p[0] = v; p[1] = v >> 8; p[2] = v >> 16; p[3] = v >> 24; }

// ---- frame parser (pure: also driven by --selftest-parse) ----

struct frame { uint32_t len; uint8_t type; uint32_t id; const uint8_t *payload; };

// Decode one frame from buf[0..n). Returns >0: bytes consumed (frame filled), 0: need more bytes,
// -1: protocol error (bad header).
static long parse_frame(const uint8_t *buf, size_t n, struct frame *f) {
  if (n < AGENT_HDR) return 0;
  uint32_t len = rd32(buf);
  if (len > AGENT_MAX_PAYLOAD) return -1;
  if (buf[5] | buf[6] | buf[7]) return -1;
  if (n - AGENT_HDR < len) return 0;
  f->len = len;
  f->type = buf[4];
  f->id = rd32(buf + 8);
  f->payload = buf + AGENT_HDR;
  return (long)(AGENT_HDR + len);
}

// EXEC payload: u32 flags, u16 rows, u16 cols, u32 out_window, u32 argc, u32 envc, then cwd, argc
// argv strings and envc "K=V" strings, each NUL-terminated, filling the payload exactly.
struct exec_req { uint32_t flags; uint16_t rows, cols; uint32_t window; uint32_t argc, envc; const char *cwd; const char **argv; const char **env; };

// Returns 0 and fills r (argv/env arrays malloc'd, NULL-terminated) or -1 for a malformed payload.
static int parse_exec(const uint8_t *p, uint32_t len, struct exec_req *r) {
  memset(r, 0, sizeof *r);
  if (len < 20) return -1;
  r->flags = rd32(p);
  r->rows = rd16(p + 4);
  r->cols = rd16(p + 6);
  r->window = rd32(p + 8);
  r->argc = rd32(p + 12);
  r->envc = rd32(p + 16);
  if (r->flags & ~EXEC_F_KNOWN) return -1;
  if (r->argc == 0) return -1;
  // Each string needs at least its NUL: bounds the counts by the payload before allocating.
  uint32_t left = len - 20;
  if (r->argc > left || r->envc > left || (uint64_t)r->argc + r->envc + 1 > left) return -1;
  r->argv = calloc(r->argc + 1, sizeof(char *));
  r->env = calloc(r->envc + 1, sizeof(char *));
  if (!r->argv || !r->env) goto bad;
  const uint8_t *s = p + 20, *end = p + len;
  uint32_t total = 1 + r->argc + r->envc;
  for (uint32_t i = 0; i < total; i++) {
    const uint8_t *z = memchr(s, 0, (size_t)(end - s));
    if (!z) goto bad;
    if (i == 0) r->cwd = (const char *)s;
    else if (i <= r->argc) r->argv[i - 1] = (const char *)s;
    else {
      if (!memchr(s, '=', (size_t)(z - s))) goto bad;
      r->env[i - 1 - r->argc] = (const char *)s;
    }
    s = z + 1;
  }
  if (s != end) goto bad;
  if (r->argv[0][0] == 0) goto bad;
  return 0;
bad:
  free(r->argv);
  free(r->env);
  r->argv = r->env = NULL;
  return -1;
}

// Path payloads (WRITE_FILE: u32 mode, u32 flags = 0, path; READ_FILE: u32 window, path): the path
// is the rest, NUL-terminated exactly at the end, non-empty, no other NUL.
static const char *parse_path(const uint8_t *p, uint32_t len, uint32_t off) {
  if (len < off + 2 || p[len - 1] != 0) return NULL;
  if (memchr(p + off, 0, len - off - 1)) return NULL;
  return (const char *)p + off;
}

static int selftest_parse(void) {
  static uint8_t in[8 << 20];
  size_t n = 0;
  ssize_t k;
  while (n < sizeof in && (k = read(0, in + n, sizeof in - n)) > 0) n += (size_t)k;
  if (n == 0) return 0;
  size_t chunk = in[0] ? in[0] : 1;
  const uint8_t *data = in + 1;
  size_t total = n - 1, fed = 0, start = 0;
  while (fed < total || start < fed) {
    size_t step = total - fed < chunk ? total - fed : chunk;
    fed += step;
    for (;;) {
      struct frame f;
      long c = parse_frame(data + start, fed - start, &f);
      if (c < 0) { printf("error\n"); return 0; }
      if (c == 0) break;
      printf("frame %u %u %u\n", f.type, f.id, f.len);
      if (f.type == T_EXEC) {
        struct exec_req r;
        if (parse_exec(f.payload, f.len, &r) == 0) {
          printf("exec %u %u %u %u %u %u\n", r.flags, r.rows, r.cols, r.window, r.argc, r.envc);
          free(r.argv);
          free(r.env);
        } else printf("exec bad\n");
      }
      start += (size_t)c;
    }
    if (step == 0) break;
  }
  printf("rest %zu\n", fed - start);
  return 0;
}

// ---- connections and operations ----

enum { OP_FREE, OP_EXEC, OP_WRITE, OP_READ };

struct op {
  int kind;
  uint32_t id;
  // exec
  pid_t pid;
  int tty;
  int fd_in, fd_out, fd_err;  // fd_out is the pty master with a TTY (fd_in == fd_out then)
  int fd_slave;               // the agent's own copy of the pty slave, closed when the process is reaped
  uint32_t credit_out, credit_err;
  uint8_t *inbuf;
  uint32_t in_len, in_credit;  // buffered stdin bytes, credit the client still has
  int in_eof;                  // EOF received (close stdin when the buffer drains)
  int reaped, status;
  // files
  int fd;
};

struct conn {
  int fd;
  uint8_t *in;
  size_t in_len, in_cap;
  uint8_t *out;
  size_t out_len, out_off, out_cap;
  int closing;  // flush the output, then close
  struct op ops[MAX_OPS];
};

static struct conn *conns[MAX_CONNS];
static const char *default_path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

static void set_nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

static int out_reserve(struct conn *c, size_t n) {
  if (c->out_off > 0 && c->out_off == c->out_len) c->out_off = c->out_len = 0;
  if (c->out_len + n <= c->out_cap) return 0;
  if (c->out_off > 0) {
    memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
    c->out_len -= c->out_off;
    c->out_off = 0;
    if (c->out_len + n <= c->out_cap) return 0;
  }
  size_t cap = c->out_cap ? c->out_cap : 4096;
  while (cap < c->out_len + n) cap *= 2;
  uint8_t *p = realloc(c->out, cap);
  if (!p) return -1;
  c->out = p;
  c->out_cap = cap;
  return 0;
}

// Append a frame header for `len` payload bytes and return where the payload goes (NULL: no memory).
static uint8_t *frame_begin(struct conn *c, uint8_t type, uint32_t id, uint32_t len) {
  if (out_reserve(c, AGENT_HDR + (size_t)len) < 0) return NULL;
  uint8_t *h = c->out + c->out_len;
  wr32(h, len);
  h[4] = type;
  h[5] = h[6] = h[7] = 0;
  wr32(h + 8, id);
  c->out_len += AGENT_HDR + len;
  return h + AGENT_HDR;
}

static void send_frame(struct conn *c, uint8_t type, uint32_t id, const void *p, uint32_t len) {
  uint8_t *d = frame_begin(c, type, id, len);
  if (!d) { c->closing = 1; return; }
  if (len) memcpy(d, p, len);
}

static void send_u32s(struct conn *c, uint8_t type, uint32_t id, int n, uint32_t a, uint32_t b, uint32_t x) {
  uint8_t p[12];
  wr32(p, a);
  wr32(p + 4, b);
  wr32(p + 8, x);
  send_frame(c, type, id, p, (uint32_t)n * 4);
}

static void send_error(struct conn *c, uint32_t id, int err, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void send_error(struct conn *c, uint32_t id, int err, const char *fmt, ...) {
  uint8_t p[4 + 512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf((char *)p + 4, 512, fmt, ap);
  va_end(ap);
  if (n < 0) n = 0;
  if (n > 511) n = 511;
  wr32(p, (uint32_t)err);
  send_frame(c, T_ERROR, id, p, 4 + (uint32_t)n);
}

static void free_op(struct op *o);

// The connection is done for: its processes are killed now (not when the peer gets round to
// reading the ERROR), then the ERROR is flushed and the connection closed.
static void protocol_error(struct conn *c, const char *what) {
  send_error(c, 0, EPROTO, "protocol error: %s", what);
  c->closing = 1;
  for (int k = 0; k < MAX_OPS; k++)
    if (c->ops[k].kind != OP_FREE) free_op(&c->ops[k]);
}

static struct op *find_op(struct conn *c, uint32_t id) {
  for (int i = 0; i < MAX_OPS; i++)
    if (c->ops[i].kind != OP_FREE && c->ops[i].id == id) return &c->ops[i];
  return NULL;
}

static struct op *new_op(struct conn *c, uint32_t id, int kind) {
  if (id == 0) { protocol_error(c, "operation id 0"); return NULL; }
  if (find_op(c, id)) { protocol_error(c, "operation id already in use"); return NULL; }
  for (int i = 0; i < MAX_OPS; i++) {
    struct op *o = &c->ops[i];
    if (o->kind == OP_FREE) {
      memset(o, 0, sizeof *o);
      o->kind = kind;
      o->id = id;
      o->fd_in = o->fd_out = o->fd_err = o->fd = o->fd_slave = -1;
      return o;
    }
  }
  send_error(c, id, EBUSY, "too many operations on this connection (max %d)", MAX_OPS);
  return NULL;
}

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

static void free_op(struct op *o) {
  if (o->kind == OP_EXEC && !o->reaped && o->pid > 0) kill(o->pid, SIGKILL);  // reaped by waitpid(-1)
  if (o->fd_in == o->fd_out) o->fd_in = -1;
  close_fd(&o->fd_in);
  close_fd(&o->fd_out);
  close_fd(&o->fd_err);
  close_fd(&o->fd_slave);
  close_fd(&o->fd);
  free(o->inbuf);
  o->inbuf = NULL;
  o->kind = OP_FREE;
}

static void close_conn(int i) {
  struct conn *c = conns[i];
  for (int k = 0; k < MAX_OPS; k++)
    if (c->ops[k].kind != OP_FREE) free_op(&c->ops[k]);
  close(c->fd);
  free(c->in);
  free(c->out);
  free(c);
  conns[i] = NULL;
}

// ---- exec ----

static const char *sig_env_lookup(const char **env, const char *key) {
  size_t k = strlen(key);
  for (; env && *env; env++)
    if (!strncmp(*env, key, k) && (*env)[k] == '=') return *env + k + 1;
  return NULL;
}

// Build the child's environment: the agent's own (unless CLEAR_ENV) overridden by the request's.
static char **build_env(const struct exec_req *r) {
  extern char **environ;
  size_t n = 0;
  if (!(r->flags & EXEC_F_CLEAR_ENV))
    for (char **e = environ; *e; e++) n++;
  char **out = calloc(n + r->envc + 2, sizeof(char *));
  if (!out) return NULL;
  size_t m = 0;
  if (!(r->flags & EXEC_F_CLEAR_ENV)) {
    for (char **e = environ; *e; e++) {
      const char *eq = strchr(*e, '=');
      size_t k = eq ? (size_t)(eq - *e) : strlen(*e);
      int overridden = 0;
      for (uint32_t j = 0; j < r->envc; j++)
        if (!strncmp(r->env[j], *e, k) && r->env[j][k] == '=') overridden = 1;
      if (!overridden) out[m++] = *e;
    }
  }
  for (uint32_t j = 0; j < r->envc; j++) {
    // A later duplicate key in the request wins: drop earlier ones.
    const char *eq = strchr(r->env[j], '=');
    size_t k = (size_t)(eq - r->env[j]);
    int later = 0;
    for (uint32_t x = j + 1; x < r->envc; x++)
      if (!strncmp(r->env[x], r->env[j], k) && r->env[x][k] == '=') later = 1;
    if (!later) out[m++] = (char *)r->env[j];
  }
  if (!sig_env_lookup((const char **)out, "PATH") && !(r->flags & EXEC_F_CLEAR_ENV)) {
    static char pathvar[128];
    snprintf(pathvar, sizeof pathvar, "PATH=%s", default_path);
    out[m++] = pathvar;
  }
  out[m] = NULL;
  return out;
}

static void child_fail(const char *argv0, int err) {
  char msg[600];
  int code = err == ENOENT ? 127 : 126;
  int n = err == ENOENT ? snprintf(msg, sizeof msg, "%s: not found\n", argv0)
                        : snprintf(msg, sizeof msg, "%s: %s\n", argv0, strerror(err));
  if (n > (int)sizeof msg - 1) n = sizeof msg - 1;
  if (write(2, msg, (size_t)n) < 0) {}
  _exit(code);
}

static void do_exec(struct conn *c, struct frame *f) {
  struct exec_req r;
  if (parse_exec(f->payload, f->len, &r) < 0) { protocol_error(c, "malformed EXEC payload"); return; }
  struct op *o = new_op(c, f->id, OP_EXEC);
  if (!o) goto out;
  char **envp = build_env(&r);
  if (!envp) { send_error(c, f->id, ENOMEM, "out of memory"); o->kind = OP_FREE; goto out; }
  int pin[2] = {-1, -1}, pout[2] = {-1, -1}, perr[2] = {-1, -1};
  int master = -1, slave_fd = -1;
  char slave[128];
  int err = 0;
  if (r.flags & EXEC_F_TTY) {
    errno = 0;
    master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0 || grantpt(master) < 0 || unlockpt(master) < 0 || ptsname_r(master, slave, sizeof slave) != 0) err = errno ? errno : EIO;
    // The agent holds the slave open itself until the process is reaped: Linux returns EIO from a
    // master whose slave is not open, which must not be taken for the end of output (and the master
    // closed, hanging up the process) before the child has its terminal.
    if (!err && (slave_fd = open(slave, O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0) err = errno;
    if (!err && r.rows && r.cols) {
      struct winsize ws = { .ws_row = r.rows, .ws_col = r.cols };
      ioctl(master, TIOCSWINSZ, &ws);
    }
  } else if (pipe2(pin, O_CLOEXEC) < 0 || pipe2(pout, O_CLOEXEC) < 0 || pipe2(perr, O_CLOEXEC) < 0) err = errno;
  o->inbuf = malloc(AGENT_STDIN_BUF);
  if (!o->inbuf) err = ENOMEM;
  pid_t pid = -1;
  if (!err) {
    pid = fork();
    if (pid < 0) err = errno;
  }
  if (pid == 0) {
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    signal(SIGPIPE, SIG_DFL);
    setsid();
    if (r.flags & EXEC_F_TTY) {
      ioctl(slave_fd, TIOCSCTTY, 0);
      dup2(slave_fd, 0);
      dup2(slave_fd, 1);
      dup2(slave_fd, 2);
    } else {
      dup2(pin[0], 0);
      dup2(pout[1], 1);
      dup2(perr[1], 2);
    }
    if (r.cwd[0] && chdir(r.cwd) < 0) {
      int e = errno;
      char msg[600];
      int n = snprintf(msg, sizeof msg, "kindling-agent: cannot change directory to %s: %s\n", r.cwd, strerror(e));
      if (n > (int)sizeof msg - 1) n = sizeof msg - 1;
      if (write(2, msg, (size_t)n) < 0) {}
      _exit(1);
    }
    extern char **environ;
    environ = envp;
    execvp(r.argv[0], (char *const *)r.argv);
    child_fail(r.argv[0], errno);
  }
  free(envp);
  if (err) {
    if (master >= 0) close(master);
    if (slave_fd >= 0) close(slave_fd);
    for (int k = 0; k < 2; k++) {
      if (pin[k] >= 0) close(pin[k]);
      if (pout[k] >= 0) close(pout[k]);
      if (perr[k] >= 0) close(perr[k]);
    }
    send_error(c, f->id, err, "cannot start %s: %s", r.argv[0], strerror(err));
    free_op(o);
    goto out;
  }
  o->pid = pid;
  o->tty = (r.flags & EXEC_F_TTY) != 0;
  if (o->tty) {
    o->fd_in = o->fd_out = master;
    o->fd_slave = slave_fd;
    set_nonblock(master);
  } else {
    close(pin[0]);
    close(pout[1]);
    close(perr[1]);
    o->fd_in = pin[1];
    o->fd_out = pout[0];
    o->fd_err = perr[0];
    set_nonblock(o->fd_in);
    set_nonblock(o->fd_out);
    set_nonblock(o->fd_err);
  }
  o->credit_out = r.window;
  o->credit_err = o->tty ? 0 : r.window;
  o->in_credit = AGENT_STDIN_BUF;
  send_u32s(c, T_STARTED, f->id, 1, (uint32_t)pid, 0, 0);
  send_u32s(c, T_STDIN_WINDOW, f->id, 1, AGENT_STDIN_BUF, 0, 0);
out:
  free(r.argv);
  free(r.env);
}

static void stdin_flush(struct op *o) {
  while (o->in_len > 0 && o->fd_in >= 0) {
    ssize_t n = write(o->fd_in, o->inbuf, o->in_len);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return;
      // EPIPE: the process closed its stdin; the bytes are dropped, as for a pipe nobody reads.
      o->in_len = 0;
      if (!o->tty) close_fd(&o->fd_in);
      return;
    }
    memmove(o->inbuf, o->inbuf + n, o->in_len - (size_t)n);
    o->in_len -= (uint32_t)n;
  }
}

// Credit returned to the client for stdin bytes that left the buffer (written or dropped).
static void stdin_progress(struct conn *c, struct op *o, uint32_t before) {
  uint32_t freed = before - o->in_len;
  if (freed && !o->in_eof) {
    o->in_credit += freed;
    send_u32s(c, T_STDIN_WINDOW, o->id, 1, freed, 0, 0);
  }
  if (o->in_eof && o->in_len == 0 && o->fd_in >= 0) {
    if (o->tty) {
      // A terminal has no EOF of its own: send the line discipline's EOF character (VEOF).
      struct termios t;
      uint8_t eof = 4;
      if (tcgetattr(o->fd_in, &t) == 0) eof = t.c_cc[VEOF];
      if (write(o->fd_in, &eof, 1) < 0) {}
      o->fd_in = -1;  // the master stays open as fd_out
    } else close_fd(&o->fd_in);
  }
}

static void do_stdin(struct conn *c, struct frame *f) {
  struct op *o = find_op(c, f->id);
  if (!o || o->kind != OP_EXEC) return;  // the process has finished: late input is dropped
  if (o->in_eof) { if (f->len) protocol_error(c, "STDIN after EOF"); return; }
  if (f->len > o->in_credit) { protocol_error(c, "STDIN beyond the granted window"); return; }
  uint32_t before = o->in_len;
  if (f->len == 0) o->in_eof = 1;
  else if (o->fd_in < 0) {
    // stdin already closed by the process: the bytes are dropped and their credit returned
    send_u32s(c, T_STDIN_WINDOW, o->id, 1, f->len, 0, 0);
    return;
  } else {
    memcpy(o->inbuf + o->in_len, f->payload, f->len);
    o->in_len += f->len;
    o->in_credit -= f->len;
    before = o->in_len;
    stdin_flush(o);
  }
  stdin_progress(c, o, before);
}

// ---- files ----

static void do_write_file(struct conn *c, struct frame *f) {
  const char *path = parse_path(f->payload, f->len, 8);
  if (!path || rd32(f->payload + 4) != 0) { protocol_error(c, "malformed WRITE_FILE payload"); return; }
  uint32_t mode = rd32(f->payload) & 07777;
  struct op *o = new_op(c, f->id, OP_WRITE);
  if (!o) return;
  o->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, mode);
  if (o->fd < 0 || fchmod(o->fd, mode) < 0) {
    int e = errno;
    send_error(c, f->id, e, "%s: %s", path, strerror(e));
    free_op(o);
  }
}

static void do_write_data(struct conn *c, struct frame *f) {
  struct op *o = find_op(c, f->id);
  if (!o || o->kind != OP_WRITE) return;  // failed at open (ERROR sent): data dropped
  if (f->len == 0) {
    if (fsync(o->fd) < 0 && errno != EINVAL && errno != EROFS) {
      int e = errno;
      send_error(c, f->id, e, "fsync: %s", strerror(e));
    } else if (close(o->fd) < 0) {
      int e = errno;
      o->fd = -1;
      send_error(c, f->id, e, "close: %s", strerror(e));
    } else {
      o->fd = -1;
      send_frame(c, T_DONE, f->id, NULL, 0);
    }
    free_op(o);
    return;
  }
  const uint8_t *p = f->payload;
  uint32_t left = f->len;
  while (left) {
    ssize_t n = write(o->fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int e = n < 0 ? errno : ENOSPC;
      send_error(c, f->id, e, "write: %s", strerror(e));
      free_op(o);
      return;
    }
    p += n;
    left -= (uint32_t)n;
  }
}

static void do_read_file(struct conn *c, struct frame *f) {
  const char *path = parse_path(f->payload, f->len, 4);
  if (!path) { protocol_error(c, "malformed READ_FILE payload"); return; }
  struct op *o = new_op(c, f->id, OP_READ);
  if (!o) return;
  struct stat st;
  o->fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  int e = 0;
  if (o->fd < 0 || fstat(o->fd, &st) < 0) e = errno;
  else if (S_ISDIR(st.st_mode)) e = EISDIR;
  if (e) {
    send_error(c, f->id, e, "%s: %s", path, strerror(e));
    free_op(o);
    return;
  }
  o->credit_out = rd32(f->payload);
  uint64_t size = (uint64_t)st.st_size;
  send_u32s(c, T_FILE_INFO, f->id, 3, st.st_mode & 07777, (uint32_t)size, (uint32_t)(size >> 32));
}

// ---- frame dispatch ----

static void dispatch(struct conn *c, struct frame *f) {
  switch (f->type) {
    case T_EXEC: do_exec(c, f); break;
    case T_STDIN: do_stdin(c, f); break;
    case T_SIGNAL: {
      if (f->len != 4) { protocol_error(c, "malformed SIGNAL payload"); break; }
      struct op *o = find_op(c, f->id);
      uint32_t sig = rd32(f->payload);
      if (sig == 0 || sig >= 65) { send_error(c, f->id, EINVAL, "invalid signal %u", sig); break; }
      if (o && o->kind == OP_EXEC && !o->reaped) kill(o->pid, (int)sig);
      break;
    }
    case T_WINDOW: {
      if (f->len != 8) { protocol_error(c, "malformed WINDOW payload"); break; }
      struct op *o = find_op(c, f->id);
      if (!o) break;
      uint64_t a = (uint64_t)o->credit_out + rd32(f->payload), b = (uint64_t)o->credit_err + rd32(f->payload + 4);
      if (a > UINT32_MAX || b > UINT32_MAX) { protocol_error(c, "WINDOW overflows 2^32"); break; }
      o->credit_out = (uint32_t)a;
      o->credit_err = (uint32_t)b;
      break;
    }
    case T_RESIZE: {
      if (f->len != 4) { protocol_error(c, "malformed RESIZE payload"); break; }
      struct op *o = find_op(c, f->id);
      if (o && o->kind == OP_EXEC && o->tty) {
        struct winsize ws = { .ws_row = rd16(f->payload), .ws_col = rd16(f->payload + 2) };
        ioctl(o->fd_out, TIOCSWINSZ, &ws);
      }
      break;
    }
    case T_WRITE_FILE: do_write_file(c, f); break;
    case T_WRITE_DATA: do_write_data(c, f); break;
    case T_READ_FILE: do_read_file(c, f); break;
    default: protocol_error(c, "unknown frame type");
  }
}

static void conn_input(struct conn *c) {
  for (;;) {
    if (c->in_len == c->in_cap) {
      // Grow to the frame the header announces (bounded by AGENT_MAX_PAYLOAD), else by half.
      size_t want = c->in_cap < AGENT_CHUNK ? AGENT_CHUNK : c->in_cap + c->in_cap / 2;
      if (c->in_len >= AGENT_HDR) {
        uint32_t len = rd32(c->in);
        if (len <= AGENT_MAX_PAYLOAD && AGENT_HDR + (size_t)len > want) want = AGENT_HDR + (size_t)len;
      }
      if (want > AGENT_HDR + AGENT_MAX_PAYLOAD) want = AGENT_HDR + AGENT_MAX_PAYLOAD;
      if (want <= c->in_cap) { protocol_error(c, "frame too large"); return; }
      uint8_t *p = realloc(c->in, want);
      if (!p) { c->closing = 1; return; }
      c->in = p;
      c->in_cap = want;
    }
    ssize_t n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    if (n <= 0) { c->closing = 2; return; }  // peer closed (or error): nothing more to send
    c->in_len += (size_t)n;
    size_t off = 0;
    while (!c->closing) {
      struct frame f;
      long k = parse_frame(c->in + off, c->in_len - off, &f);
      if (k < 0) { protocol_error(c, "bad frame header"); break; }
      if (k == 0) break;
      dispatch(c, &f);
      off += (size_t)k;
    }
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
    if (c->closing || c->out_len - c->out_off > AGENT_OUT_HIGH) break;
  }
}

static void conn_flush(struct conn *c) {
  while (c->out_off < c->out_len) {
    ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    if (n <= 0) { c->closing = 2; return; }
    c->out_off += (size_t)n;
  }
  c->out_off = c->out_len = 0;
  if (c->out_cap > 4 * AGENT_OUT_HIGH) {  // give back a buffer a burst grew
    free(c->out);
    c->out = NULL;
    c->out_cap = 0;
  }
}

// Read up to min(credit, AGENT_CHUNK) bytes from fd straight into a frame. Returns bytes, 0 at EOF,
// -1 when nothing is available now.
static long pump(struct conn *c, int fd, uint8_t type, uint32_t id, uint32_t *credit) {
  uint32_t want = *credit < AGENT_CHUNK ? *credit : AGENT_CHUNK;
  if (out_reserve(c, AGENT_HDR + want) < 0) return -1;
  uint8_t *h = c->out + c->out_len;
  ssize_t n;
  do n = read(fd, h + AGENT_HDR, want); while (n < 0 && errno == EINTR);
  if (n < 0 && errno == EAGAIN) return -1;
  if (n < 0) n = 0;  // EIO from a pty master whose slave side is gone: EOF
  if (n == 0) return 0;
  wr32(h, (uint32_t)n);
  h[4] = type;
  h[5] = h[6] = h[7] = 0;
  wr32(h + 8, id);
  c->out_len += AGENT_HDR + (size_t)n;
  *credit -= (uint32_t)n;
  return n;
}

static void maybe_finish_exec(struct conn *c, struct op *o) {
  if (!o->reaped || o->fd_out >= 0 || o->fd_err >= 0) return;
  int st = o->status;
  uint32_t kind = WIFSIGNALED(st) ? 1 : 0;
  uint32_t val = WIFSIGNALED(st) ? (uint32_t)WTERMSIG(st) : (uint32_t)WEXITSTATUS(st);
  send_u32s(c, T_EXIT, o->id, 2, kind, val, 0);
  free_op(o);
}

static void reap(void) {
  int st;
  pid_t pid;
  while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
    for (int i = 0; i < MAX_CONNS; i++) {
      struct conn *c = conns[i];
      if (!c) continue;
      for (int k = 0; k < MAX_OPS; k++) {
        struct op *o = &c->ops[k];
        if (o->kind == OP_EXEC && o->pid == pid && !o->reaped) {
          o->reaped = 1;
          o->status = st;
          close_fd(&o->fd_slave);
          maybe_finish_exec(c, o);
        }
      }
    }
  }
}

static int listen_on(const char *unix_path, int vsock_port) {
  int fd;
  if (unix_path) {
    // Bound and listening under PATH.tmp first, then linked to PATH: the path appears only once it
    // accepts connections (a client that connects as soon as it sees the path is never refused), and
    // link() fails on an existing PATH as bind() would.
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    if (strlen(unix_path) + 4 >= sizeof a.sun_path) { fprintf(stderr, "kindling-agent: socket path too long: %s\n", unix_path); exit(2); }
    snprintf(a.sun_path, sizeof a.sun_path, "%s.tmp", unix_path);
    unlink(a.sun_path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 16) < 0 || link(a.sun_path, unix_path) < 0) {
      int e = errno;
      unlink(a.sun_path);
      fprintf(stderr, "kindling-agent: cannot listen on %s: %s\n", unix_path, strerror(e));
      exit(1);
    }
    unlink(a.sun_path);
    return fd;
  } else {
    struct sockaddr_vm a = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = (unsigned)vsock_port };
    fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0) { fprintf(stderr, "kindling-agent: cannot listen on vsock port %d: %s\n", vsock_port, strerror(errno)); exit(1); }
  }
  if (listen(fd, 16) < 0) { fprintf(stderr, "kindling-agent: listen: %s\n", strerror(errno)); exit(1); }
  return fd;
}

static void usage(void) {
  fprintf(stderr, "usage: kindling-agent [--vsock PORT | --unix PATH | --fd N] | --selftest-parse\n");
  exit(2);
}

int main(int argc, char **argv) {
  const char *unix_path = NULL;
  int port = AGENT_DEFAULT_PORT, lfd = -1;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--selftest-parse")) return selftest_parse();
    if (i + 1 >= argc) usage();
    char *end;
    if (!strcmp(argv[i], "--unix")) unix_path = argv[++i];
    else if (!strcmp(argv[i], "--vsock")) {
      long v = strtol(argv[++i], &end, 10);
      if (*end || v < 1 || v > 0x7fffffff) usage();
      port = (int)v;
    } else if (!strcmp(argv[i], "--fd")) {
      long v = strtol(argv[++i], &end, 10);
      if (*end || v < 0 || v > 65535) usage();
      lfd = (int)v;
    } else usage();
  }
  signal(SIGPIPE, SIG_IGN);
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  sigprocmask(SIG_BLOCK, &mask, NULL);
  int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sfd < 0) { fprintf(stderr, "kindling-agent: signalfd: %s\n", strerror(errno)); return 1; }
  if (lfd >= 0) {
    fcntl(lfd, F_SETFD, FD_CLOEXEC);
    set_nonblock(lfd);
  } else lfd = listen_on(unix_path, port);

  // pollfd slots: [0] listener, [1] signalfd, then per connection 1 + 3 per op.
  static struct pollfd pfd[2 + MAX_CONNS * (1 + 3 * MAX_OPS)];
  for (;;) {
    int n = 0;
    pfd[n++] = (struct pollfd){ .fd = lfd, .events = POLLIN };
    pfd[n++] = (struct pollfd){ .fd = sfd, .events = POLLIN };
    for (int i = 0; i < MAX_CONNS; i++) {
      struct conn *c = conns[i];
      if (!c) continue;
      size_t pending = c->out_len - c->out_off;
      short ev = 0;
      if (!c->closing && pending <= AGENT_OUT_HIGH) ev |= POLLIN;
      if (pending) ev |= POLLOUT;
      pfd[n++] = (struct pollfd){ .fd = c->fd, .events = ev };
      if (c->closing) continue;
      for (int k = 0; k < MAX_OPS; k++) {
        struct op *o = &c->ops[k];
        if (o->kind == OP_FREE) continue;
        // An fd is polled only when there is something to do with it (else -1: poll skips it, so a
        // hung-up pipe waiting for credit does not spin the loop).
        int room = pending < AGENT_OUT_HIGH;
        if (o->kind == OP_EXEC) {
          pfd[n++] = (struct pollfd){ .fd = (room && o->credit_out) ? o->fd_out : -1, .events = POLLIN };
          pfd[n++] = (struct pollfd){ .fd = (room && o->credit_err) ? o->fd_err : -1, .events = POLLIN };
          pfd[n++] = (struct pollfd){ .fd = o->in_len ? o->fd_in : -1, .events = POLLOUT };
        } else if (o->kind == OP_READ) {
          pfd[n++] = (struct pollfd){ .fd = (room && o->credit_out) ? o->fd : -1, .events = POLLIN };
        }
      }
    }
    if (poll(pfd, (nfds_t)n, -1) < 0) {
      if (errno == EINTR) continue;
      fprintf(stderr, "kindling-agent: poll: %s\n", strerror(errno));
      return 1;
    }
    // Walk the ops in the order the pollfd array was built: an op's slots are consumed before it can
    // be freed, new ops appear only in conn_input (after its connection's walk) and reap() runs last.
    int p = 2;
    for (int i = 0; i < MAX_CONNS; i++) {
      struct conn *c = conns[i];
      if (!c) continue;
      short rev = pfd[p++].revents;
      int was_closing = c->closing;
      if (!was_closing) {
        for (int k = 0; k < MAX_OPS; k++) {
          struct op *o = &c->ops[k];
          short r0, r1, r2;
          if (o->kind == OP_EXEC) {
            r0 = pfd[p++].revents;
            r1 = pfd[p++].revents;
            r2 = pfd[p++].revents;
            if (r2 && o->fd_in >= 0) {
              uint32_t before = o->in_len;
              stdin_flush(o);
              if (r2 & (POLLERR | POLLHUP) && o->in_len) { o->in_len = 0; if (!o->tty) close_fd(&o->fd_in); }
              stdin_progress(c, o, before);
            }
            if (r0 && o->fd_out >= 0 && o->credit_out && pump(c, o->fd_out, T_STDOUT, o->id, &o->credit_out) == 0) {
              if (o->fd_in == o->fd_out) o->fd_in = -1;
              close_fd(&o->fd_out);
            }
            if (r1 && o->fd_err >= 0 && o->credit_err) {
              if (pump(c, o->fd_err, T_STDERR, o->id, &o->credit_err) == 0) close_fd(&o->fd_err);
            }
            maybe_finish_exec(c, o);
          } else if (o->kind == OP_READ) {
            r0 = pfd[p++].revents;
            if (r0 && o->credit_out) {
              long got = pump(c, o->fd, T_FILE_DATA, o->id, &o->credit_out);
              if (got == 0) {
                send_frame(c, T_FILE_DATA, o->id, NULL, 0);
                free_op(o);
              }
            }
          }
        }
      }
      if ((rev & POLLIN) && !was_closing) conn_input(c);
      else if ((rev & (POLLHUP | POLLERR)) && !(rev & POLLIN)) c->closing = 2;
      if (c->closing != 2 && c->out_len > c->out_off) conn_flush(c);
      if (c->closing == 2 || (c->closing && c->out_off == c->out_len)) close_conn(i);
    }
    if (pfd[1].revents) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) == sizeof si) {}
      reap();
    }
    if (pfd[0].revents & POLLIN) {
      for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) break;
        int slot = -1;
        for (int i = 0; i < MAX_CONNS; i++) if (!conns[i]) { slot = i; break; }
        struct conn *c = slot >= 0 ? calloc(1, sizeof *c) : NULL;
        if (!c) {
          static const char why[] = "too many connections";
          uint8_t busy[AGENT_HDR + 4 + sizeof why - 1] = { 0 };
          wr32(busy, 4 + sizeof why - 1);
          busy[4] = T_ERROR;
          wr32(busy + AGENT_HDR, EBUSY);
          memcpy(busy + AGENT_HDR + 4, why, sizeof why - 1);
          if (send(fd, busy, sizeof busy, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {}
          close(fd);
          continue;
        }
        c->fd = fd;
        for (int k = 0; k < MAX_OPS; k++) c->ops[k].kind = OP_FREE;
        conns[slot] = c;
        send_u32s(c, T_HELLO, 0, 2, AGENT_VERSION, AGENT_MAX_PAYLOAD, 0);
        conn_flush(c);
      }
    }
  }
}
