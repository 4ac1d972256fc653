// Socket and memory primitives for the vhost-user backend (src/vhost-user/), which Node's `net`
// cannot provide: file descriptors passed with SCM_RIGHTS, and the frontend's memory regions mapped
// from their fds as external SharedArrayBuffers. No protocol logic lives here.
//
//   unixAccept(listenFd)            accept4(SOCK_CLOEXEC | SOCK_NONBLOCK); -1 when none is pending
//   unixConnect(path)               a connected AF_UNIX stream fd (close-on-exec; tests and tools)
//   vhostRecv(fd, buf, off, len)    one recvmsg(MSG_DONTWAIT | MSG_CMSG_CLOEXEC) of at most len bytes
//                                   into buf[off..) with room for VHOST_MAX_FDS (8) passed fds:
//                                   {n, fds, ctrunc}; n = -1 for EAGAIN, 0 at EOF. Fds beyond the
//                                   control buffer are dropped by the kernel (ctrunc true).
//   vhostSend(fd, bytes, fds)       sendmsg(MSG_NOSIGNAL) of all of `bytes` (fds with the first
//                                   part), waiting at most 1 s in poll() for room; returns false if
//                                   the peer did not take it in time
//   mapFdShared(fd, offset, size)   mmap(PROT_READ|PROT_WRITE, MAP_SHARED) of [offset, offset+size)
//                                   of a regular file / memfd (fstat: must be at least that long, so
//                                   no access can fault with SIGBUS at map time), as an external
//                                   SharedArrayBuffer starting at exactly `offset` (the page
//                                   rounding is hidden); munmap when the last isolate drops it
//   releaseFdMapping(sab)           replace a mapFdShared mapping at once by private anonymous zero
//                                   pages (mmap MAP_FIXED over the same range): the file's pages are
//                                   no longer referenced (the frontend's memory is freed when it lets
//                                   go), stale views read zeros and write nowhere, the address range
//                                   stays reserved until the last isolate drops the buffer (munmap
//                                   then). false when `sab` is not a live mapping of mapFdShared.
//   memfdCreate(name, size)         memfd_create(MFD_CLOEXEC) + ftruncate (tests and frontends)
//   notifyFd(fd)                    write a u64 1 to an eventfd or pipe; false on EAGAIN (a full
//                                   pipe already holds a pending notification)
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <mutex>
#include <unordered_map>
#include <vector>

namespace kindling {

namespace {

using Napi::CallbackInfo;
using Napi::Value;

constexpr int kMaxFds = 8;

Value UnixAccept(const CallbackInfo& info) {
  Args a(info, "unixAccept");
  int lfd = a.Fd(0, "listenFd");
  if (!a.ok()) return a.env().Undefined();
  int fd;
  do fd = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNABORTED) return Napi::Number::New(a.env(), -1);
    return ThrowErrno(a.env(), "accept4", errno);
  }
  return Napi::Number::New(a.env(), fd);
}

Value UnixConnect(const CallbackInfo& info) {
  Args a(info, "unixConnect");
  std::string path = a.Str(0, "path");
  if (!a.ok()) return a.env().Undefined();
  sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof sa.sun_path || path.find('\0') != std::string::npos)
    return ThrowErrno(a.env(), "connect", ENAMETOOLONG);
  memcpy(sa.sun_path, path.data(), path.size());
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ThrowErrno(a.env(), "socket", errno);
  int r;
  do r = connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  while (r < 0 && errno == EINTR);
  if (r < 0) {
    int e = errno;
    close(fd);
    return ThrowErrno(a.env(), "connect", e);
  }
  return Napi::Number::New(a.env(), fd);
}

Value VhostRecv(const CallbackInfo& info) {
  Args a(info, "vhostRecv");
  int fd = a.Fd(0, "fd");
  size_t blen = 0;
  uint8_t* buf = a.Bytes(1, "buf", 0, &blen);
  uint64_t off = a.Size(2, "offset", 1ULL << 32);
  uint64_t len = a.Size(3, "length", 1ULL << 32);
  if (!a.ok()) return a.env().Undefined();
  if (off > blen || len > blen - off || len == 0) return ThrowRange(a.env(), "vhostRecv: [offset, offset+length) must be a non-empty range of buf");
  iovec iov{buf + off, static_cast<size_t>(len)};
  alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * kMaxFds)];
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = cbuf;
  m.msg_controllen = sizeof cbuf;
  ssize_t n;
  do n = recvmsg(fd, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  Napi::Env env = a.env();
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) n = -1;
    else return ThrowErrno(env, "recvmsg", errno);
  }
  std::vector<int> fds;
  if (n >= 0) {
    for (cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      const int* p = reinterpret_cast<const int*>(CMSG_DATA(c));
      for (size_t i = 0; i < k; i++) fds.push_back(p[i]);
    }
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("n", Napi::Number::New(env, static_cast<double>(n)));
  Napi::Array arr = Napi::Array::New(env, fds.size());
  for (size_t i = 0; i < fds.size(); i++) arr.Set(static_cast<uint32_t>(i), Napi::Number::New(env, fds[i]));
  out.Set("fds", arr);
  out.Set("ctrunc", Napi::Boolean::New(env, n >= 0 && (m.msg_flags & MSG_CTRUNC) != 0));
  return out;
}

Value VhostSend(const CallbackInfo& info) {
  Args a(info, "vhostSend");
  int fd = a.Fd(0, "fd");
  size_t blen = 0;
  uint8_t* buf = a.Bytes(1, "bytes", 0, &blen);
  if (!a.ok()) return a.env().Undefined();
  Napi::Env env = a.env();
  std::vector<int> fds;
  if (info.Length() > 2 && info[2].IsArray()) {
    Napi::Array arr = info[2].As<Napi::Array>();
    if (arr.Length() > kMaxFds) return ThrowRange(env, "vhostSend: at most 8 fds");
    for (uint32_t i = 0; i < arr.Length(); i++) {
      Napi::Value v = arr.Get(i);
      if (!v.IsNumber()) return ThrowType(env, "vhostSend: fds must be numbers");
      fds.push_back(v.As<Napi::Number>().Int32Value());
    }
  }
  size_t done = 0;
  bool first = true;
  while (done < blen || (first && blen == 0)) {
    iovec iov{buf + done, blen - done};
    alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * kMaxFds)];
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    if (first && !fds.empty()) {
      m.msg_control = cbuf;
      m.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
      cmsghdr* c = CMSG_FIRSTHDR(&m);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    ssize_t n = sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        pollfd p{fd, POLLOUT, 0};
        int r;
        do r = poll(&p, 1, 1000);
        while (r < 0 && errno == EINTR);
        if (r == 0) return Napi::Boolean::New(env, false);
        continue;
      }
      return ThrowErrno(env, "sendmsg", errno);
    }
    first = false;
    done += static_cast<size_t>(n);
    if (blen == 0) break;
  }
  return Napi::Boolean::New(env, true);
}

struct FdMapping {
  void* base;
  size_t len;
  void* data;  // what the SharedArrayBuffer starts at (base + the page-rounding delta)
  bool released;
};

// Live mappings by data pointer, for releaseFdMapping. The deleter may run on any thread.
std::mutex g_mappings_mu;
std::unordered_map<void*, FdMapping*> g_mappings;

void FdMappingDeleter(void* /*data*/, size_t /*len*/, void* ctx) {
  FdMapping* m = static_cast<FdMapping*>(ctx);
  {
    std::lock_guard<std::mutex> lock(g_mappings_mu);
    g_mappings.erase(m->data);
  }
  munmap(m->base, m->len);
  delete m;
}

Value ReleaseFdMapping(const CallbackInfo& info) {
  Napi::Env env = info.Env();
  void* data = nullptr;
  size_t blen = 0;
  if (info.Length() < 1 || !BufferData(info[0], false, &data, &blen)) return ThrowType(env, "releaseFdMapping: sab must be a SharedArrayBuffer");
  // No JS value is made while the lock is held: an allocation may collect a buffer, whose deleter
  // takes the lock on this same thread.
  int result = 0;  // 0 not ours / already released, 1 released, -errno
  {
    std::lock_guard<std::mutex> lock(g_mappings_mu);
    auto it = g_mappings.find(data);
    if (it != g_mappings.end() && !it->second->released) {
      FdMapping* m = it->second;
      void* p = mmap(m->base, m->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
      if (p == MAP_FAILED) {
        result = -errno;
      } else {
        m->released = true;
        result = 1;
      }
    }
  }
  if (result < 0) return ThrowErrno(env, "mmap", -result);
  return Napi::Boolean::New(env, result == 1);
}

Value MapFdShared(const CallbackInfo& info) {
  Args a(info, "mapFdShared");
  int fd = a.Fd(0, "fd");
  uint64_t offset = a.Size(1, "offset", (1ULL << 53) - 1);
  uint64_t size = a.Size(2, "size", 1ULL << 31);
  if (!a.ok()) return a.env().Undefined();
  Napi::Env env = a.env();
  if (size == 0) return ThrowRange(env, "mapFdShared: size must be positive");
  struct stat st;
  if (fstat(fd, &st) < 0) return ThrowErrno(env, "fstat", errno);
  if (!S_ISREG(st.st_mode)) return ThrowErrno(env, "mmap", ENODEV);
  if (st.st_size < 0 || static_cast<uint64_t>(st.st_size) < offset + size) return ThrowErrno(env, "mmap", ENXIO);
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  uint64_t base = offset - offset % page;
  uint64_t delta = offset - base;
  size_t len = static_cast<size_t>(delta + size);
  void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, static_cast<off_t>(base));
  if (p == MAP_FAILED) return ThrowErrno(env, "mmap", errno);
  FdMapping* m = new FdMapping{p, len, static_cast<char*>(p) + delta, false};
  {
    std::lock_guard<std::mutex> lock(g_mappings_mu);
    g_mappings[m->data] = m;
  }
  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  std::unique_ptr<v8::BackingStore> bs = v8::SharedArrayBuffer::NewBackingStore(
      static_cast<char*>(p) + delta, static_cast<size_t>(size), FdMappingDeleter, m);
  v8::Local<v8::SharedArrayBuffer> sab = v8::SharedArrayBuffer::New(isolate, std::move(bs));
  return Napi::Value(env, ToNapi(sab));
}

Value MemfdCreate(const CallbackInfo& info) {
  Args a(info, "memfdCreate");
  std::string name = a.Str(0, "name");
  uint64_t size = a.Size(1, "size", 1ULL << 40);
  if (!a.ok()) return a.env().Undefined();
  int fd = memfd_create(name.c_str(), MFD_CLOEXEC);
  if (fd < 0) return ThrowErrno(a.env(), "memfd_create", errno);
  if (ftruncate(fd, static_cast<off_t>(size)) < 0) {
    int e = errno;
    close(fd);
    return ThrowErrno(a.env(), "ftruncate", e);
  }
  return Napi::Number::New(a.env(), fd);
}

Value NotifyFd(const CallbackInfo& info) {
  Args a(info, "notifyFd");
  int fd = a.Fd(0, "fd");
  if (!a.ok()) return a.env().Undefined();
  uint64_t v = 1;
  ssize_t r;
  do r = write(fd, &v, sizeof v);
  while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Boolean::New(a.env(), false);
    return ThrowErrno(a.env(), "write", errno);
  }
  return Napi::Boolean::New(a.env(), true);
}

}  // namespace

void InitVhostUser(Napi::Env env, Napi::Object exports) {
  exports.Set("unixAccept", Napi::Function::New(env, UnixAccept, "unixAccept"));
  exports.Set("unixConnect", Napi::Function::New(env, UnixConnect, "unixConnect"));
  exports.Set("vhostRecv", Napi::Function::New(env, VhostRecv, "vhostRecv"));
  exports.Set("vhostSend", Napi::Function::New(env, VhostSend, "vhostSend"));
  exports.Set("mapFdShared", Napi::Function::New(env, MapFdShared, "mapFdShared"));
  exports.Set("releaseFdMapping", Napi::Function::New(env, ReleaseFdMapping, "releaseFdMapping"));
  exports.Set("memfdCreate", Napi::Function::New(env, MemfdCreate, "memfdCreate"));
  exports.Set("notifyFd", Napi::Function::New(env, NotifyFd, "notifyFd"));
}

}  // namespace kindling
