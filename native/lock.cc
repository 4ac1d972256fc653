// Open-file-description (OFD) byte-range locks, fcntl(2) F_OFD_SETLK / F_OFD_GETLK, for disk-image
// locking that QEMU and kindling both see (the scheme is in src/devices/virtio/block/image.ts). No
// policy here: which bytes mean what is decided in TypeScript.
//
//   ofdLock(fd, start, len, exclusive)   F_OFD_SETLK, F_WRLCK when exclusive else F_RDLCK, on bytes
//                                        [start, start+len) (len 0 = to the end of any file size).
//                                        true when taken; false when another open file description
//                                        holds a conflicting lock (EAGAIN/EACCES); throws otherwise.
//   ofdTest(fd, start, len, exclusive)   F_OFD_GETLK: would that lock be refused? null when not, else
//                                        the first conflicting lock { exclusive, start, len, pid }
//                                        (pid is -1 for an OFD lock, the owner's pid for a classic
//                                        POSIX lock). Locks this open file description holds never
//                                        conflict with it.
//   setNonblocking(fd, on)               F_GETFL/F_SETFL O_NONBLOCK (an image is opened non-blocking so
//                                        a FIFO cannot hang the open, then made blocking for its I/O).
//
// OFD locks belong to the open file description: they are never merged with another descriptor's,
// survive fork/dup with the description, and go away when its last fd is closed (there is no
// explicit unlock here: closing the image fd is the release).
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstring>

namespace kindling {

namespace {

using Napi::CallbackInfo;
using Napi::Value;

// Byte offsets are passed as Numbers; off_t is 64-bit on x86-64 and 2^53 bounds what JS can name.
constexpr uint64_t kMaxOffset = (1ULL << 53) - 1;

bool ParseRange(Args& a, int* fd, struct flock* fl) {
  *fd = a.Fd(0, "fd");
  uint64_t start = a.Size(1, "start", kMaxOffset);
  uint64_t len = a.Size(2, "len", kMaxOffset);
  bool exclusive = false;
  if (a.ok()) {
    Napi::Value v = Napi::Value(a.env(), a.Raw(3));
    if (!v.IsBoolean()) a.FailType("exclusive must be a boolean");
    else exclusive = v.As<Napi::Boolean>().Value();
  }
  if (!a.ok()) return false;
  memset(fl, 0, sizeof *fl);  // l_pid must be 0 for the F_OFD_* commands
  fl->l_type = exclusive ? F_WRLCK : F_RDLCK;
  fl->l_whence = SEEK_SET;
  fl->l_start = static_cast<off_t>(start);
  fl->l_len = static_cast<off_t>(len);
  return true;
}

Value OfdLock(const CallbackInfo& info) {
  Args a(info, "ofdLock");
  int fd;
  struct flock fl;
  if (!ParseRange(a, &fd, &fl)) return a.env().Undefined();
  int r;
  do r = fcntl(fd, F_OFD_SETLK, &fl);
  while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno == EAGAIN || errno == EACCES) return Napi::Boolean::New(a.env(), false);
    return ThrowErrno(a.env(), "fcntl(F_OFD_SETLK)", errno);
  }
  return Napi::Boolean::New(a.env(), true);
}

Value OfdTest(const CallbackInfo& info) {
  Args a(info, "ofdTest");
  int fd;
  struct flock fl;
  if (!ParseRange(a, &fd, &fl)) return a.env().Undefined();
  int r;
  do r = fcntl(fd, F_OFD_GETLK, &fl);
  while (r < 0 && errno == EINTR);
  if (r < 0) return ThrowErrno(a.env(), "fcntl(F_OFD_GETLK)", errno);
  if (fl.l_type == F_UNLCK) return a.env().Null();
  Napi::Object o = Napi::Object::New(a.env());
  o.Set("exclusive", Napi::Boolean::New(a.env(), fl.l_type == F_WRLCK));
  o.Set("start", Napi::Number::New(a.env(), static_cast<double>(fl.l_start)));
  o.Set("len", Napi::Number::New(a.env(), static_cast<double>(fl.l_len)));
  o.Set("pid", Napi::Number::New(a.env(), fl.l_pid));
  return o;
}

Value SetNonblocking(const CallbackInfo& info) {
  Args a(info, "setNonblocking");
  int fd = a.Fd(0, "fd");
  bool on = false;
  if (a.ok()) {
    Napi::Value v = Napi::Value(a.env(), a.Raw(1));
    if (!v.IsBoolean()) a.FailType("on must be a boolean");
    else on = v.As<Napi::Boolean>().Value();
  }
  if (!a.ok()) return a.env().Undefined();
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0) return ThrowErrno(a.env(), "fcntl(F_GETFL)", errno);
  int want = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
  if (want != flags && fcntl(fd, F_SETFL, want) < 0) return ThrowErrno(a.env(), "fcntl(F_SETFL)", errno);
  return a.env().Undefined();
}

}  // namespace

void InitLock(Napi::Env env, Napi::Object exports) {
  exports.Set("ofdLock", Napi::Function::New(env, OfdLock, "ofdLock"));
  exports.Set("ofdTest", Napi::Function::New(env, OfdTest, "ofdTest"));
  exports.Set("setNonblocking", Napi::Function::New(env, SetNonblocking, "setNonblocking"));
}

}  // namespace kindling
