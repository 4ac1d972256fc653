// Host-side socket primitives for virtio-vsock (src/devices/virtio/vsock/): what Node's `net` cannot
// do on its own. No VMM policy here.
//
//   socketpair()            a connected AF_UNIX SOCK_STREAM pair (close-on-exec). The in-process
//                           bridge gives one end to the device's I/O worker and wraps the other as a
//                           net.Socket on the main thread (vm.vsock), so both host paths are stream fds.
//   unixListen(path, n)     socket + bind + listen on a Unix socket path, synchronously, so a bad or
//                           busy `uds_path` is reported on the main thread before the VM is built; the
//                           I/O worker serves the fd with net.Server.listen({ fd }).
#include "common.h"

#include <errno.h>
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

Value UnixListen(const CallbackInfo& info) {
  Args a(info, "unixListen");
  std::string path = a.Str(0, "path");
  int32_t backlog = a.I32(1, "backlog");
  if (!a.ok()) return a.env().Undefined();
  sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof sa.sun_path || path.find('\0') != std::string::npos) {
    return ThrowErrno(a.env(), "bind", ENAMETOOLONG);
  }
  memcpy(sa.sun_path, path.data(), path.size());
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ThrowErrno(a.env(), "socket", errno);
  if (bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) {
    int e = errno;
    close(fd);
    return ThrowErrno(a.env(), "bind", e);
  }
  if (listen(fd, backlog > 0 ? backlog : 128) < 0) {
    int e = errno;
    close(fd);
    unlink(path.c_str());
    return ThrowErrno(a.env(), "listen", e);
  }
  return Napi::Number::New(a.env(), fd);
}

}  // namespace

void InitVsock(Napi::Env env, Napi::Object exports) {
  exports.Set("socketpair", Napi::Function::New(env, Socketpair, "socketpair"));
  exports.Set("unixListen", Napi::Function::New(env, UnixListen, "unixListen"));
}

}  // namespace kindling
