// Host-side socket primitives for virtio-vsock (src/devices/virtio/vsock/): what Node's `net` cannot
// do on its own. No VMM policy here.
//
//   socketpair()            a connected AF_UNIX SOCK_STREAM pair (close-on-exec). The in-process
//                           bridge gives one end to the device's I/O worker and wraps the other as a
//                           net.Socket on the main thread (vm.vsock), so both host paths are stream fds.
//   unixListen(path, n)     socket + bind + listen on a Unix socket path, synchronously, so a bad or
//                           busy `uds_path` is reported on the main thread before the VM is built; the
//                           I/O worker serves the fd with net.Server.listen({ fd }). The path appears
//                           only once it accepts connections (see UnixListen).
#include "common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace kindling {

namespace {

using Napi::CallbackInfo;
using Napi::Value;

Value Socketpair(const CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return ThrowErrno(env, "socketpair", errno);
  Napi::Array out = Napi::Array::New(env, 2);
  out.Set(0u, Napi::Number::New(env, sv[0]));
  out.Set(1u, Napi::Number::New(env, sv[1]));
  return out;
}

// bind() makes the socket file before listen() makes it connectable: a client that waits for the
// path to appear (as Firecracker's SDKs and our tests do) and connects in that window gets
// ECONNREFUSED. So the socket is bound to a short temporary name in the same directory, made to
// listen, and only then linked to `path` (link fails with EEXIST where bind would fail with
// EADDRINUSE, and never replaces a file) and the temporary name removed. When the temporary name
// would not fit in sun_path (a path within a few bytes of the limit with a very short file name),
// the socket is bound to `path` directly.
bool FillAddr(sockaddr_un* sa, const std::string& path) {
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof sa->sun_path || path.find('\0') != std::string::npos) return false;
  memcpy(sa->sun_path, path.data(), path.size());
  return true;
}

Value UnixListen(const CallbackInfo& info) {
  Args a(info, "unixListen");
  std::string path = a.Str(0, "path");
  int32_t backlog = a.I32(1, "backlog");
  if (!a.ok()) return a.env().Undefined();
  sockaddr_un sa;
  if (!FillAddr(&sa, path)) return ThrowErrno(a.env(), "bind", ENAMETOOLONG);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ThrowErrno(a.env(), "socket", errno);
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? std::string() : path.substr(0, slash + 1);
  std::string tmp;
  for (int attempt = 0; attempt < 16; attempt++) {
    char name[16];
    snprintf(name, sizeof name, ".kl%04x", static_cast<unsigned>(rand()) & 0xffffu);
    std::string t = dir + name;
    sockaddr_un ta;
    if (!FillAddr(&ta, t)) break;
    if (bind(fd, reinterpret_cast<sockaddr*>(&ta), sizeof ta) == 0) {
      tmp = t;
      break;
    }
    if (errno != EADDRINUSE) break;  // the directory itself is the problem: bind `path` for the real error
  }
  if (tmp.empty() && bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) {
    int e = errno;
    close(fd);
    return ThrowErrno(a.env(), "bind", e);
  }
  if (listen(fd, backlog > 0 ? backlog : 128) < 0) {
    int e = errno;
    close(fd);
    unlink(tmp.empty() ? path.c_str() : tmp.c_str());
    return ThrowErrno(a.env(), "listen", e);
  }
  if (!tmp.empty()) {
    int r = link(tmp.c_str(), path.c_str());
    int e = errno;
    unlink(tmp.c_str());
    if (r < 0) {
      close(fd);
      return ThrowErrno(a.env(), "bind", e == EEXIST ? EADDRINUSE : e);
    }
  }
  return Napi::Number::New(a.env(), fd);
}

}  // namespace

void InitVsock(Napi::Env env, Napi::Object exports) {
  exports.Set("socketpair", Napi::Function::New(env, Socketpair, "socketpair"));
  exports.Set("unixListen", Napi::Function::New(env, UnixListen, "unixListen"));
}

}  // namespace kindling
