// Shared helpers of the kindling addon: errno → JS Error, argument parsing, V8 <-> Node-API handles.
#pragma once

#include <napi.h>
#include <v8.h>

#include <cstdint>
#include <cstring>
#include <string>

namespace kindling {

// ---- V8 <-> Node-API handles (napi_value is a v8::Value* slot in Node's implementation) ----------
inline napi_value ToNapi(v8::Local<v8::Value> l) { return reinterpret_cast<napi_value>(*l); }
inline v8::Local<v8::Value> ToV8(napi_value v) {
  v8::Local<v8::Value> l;
  static_assert(sizeof l == sizeof v, "v8::Local and napi_value differ in size");
  memcpy(static_cast<void*>(&l), &v, sizeof v);
  return l;
}

// ---- errors ------------------------------------------------------------------------------------
const char* ErrnoName(int err, char* buf, size_t len);
// Throws Error{code, errno, syscall}; always returns env.Undefined() so callers can `return ThrowErrno(...)`.
Napi::Value ThrowErrno(Napi::Env env, const char* syscall, int err);
Napi::Value ThrowType(Napi::Env env, const std::string& msg);
Napi::Value ThrowRange(Napi::Env env, const std::string& msg);

// ioctl that retries EINTR (never used for KVM_RUN). Returns the ioctl result or -1 with errno set.
int IoctlRetry(int fd, unsigned long req, unsigned long arg);
inline int IoctlRetry(int fd, unsigned long req, const void* arg) {
  return IoctlRetry(fd, req, reinterpret_cast<unsigned long>(arg));
}

// ---- buffers -----------------------------------------------------------------------------------
// Data pointer and length of a SharedArrayBuffer (or an ArrayBuffer when allowPlain). False if neither.
bool BufferData(napi_value v, bool allowPlain, void** data, size_t* len);

// ---- argument parsing --------------------------------------------------------------------------
// Each getter throws a TypeError/RangeError on the first bad argument and sets ok = false; later
// getters become no-ops, so a function parses everything, then checks `ok` once.
class Args {
 public:
  Args(const Napi::CallbackInfo& info, const char* fn) : info_(info), env_(info.Env()), fn_(fn) {}
  bool ok() const { return ok_; }
  Napi::Env env() const { return env_; }
  const char* fn() const { return fn_; }

  int32_t Fd(size_t i, const char* name);                      // any int32 (the kernel reports EBADF)
  int32_t I32(size_t i, const char* name);
  uint32_t U32(size_t i, const char* name);
  uint64_t Size(size_t i, const char* name, uint64_t max);      // Number, integer, 0..max (max <= 2^53)
  uint64_t U64(size_t i, const char* name);                     // BigInt (or safe Number), 0..2^64-1
  int64_t I64(size_t i, const char* name);                      // BigInt (or safe Number), signed
  std::string Str(size_t i, const char* name);
  // Uint8Array of exactly `size` bytes (size 0 = any length); returns its data pointer.
  uint8_t* Bytes(size_t i, const char* name, size_t size, size_t* lenOut = nullptr);
  // Typed array of the given type; returns data pointer and element count.
  void* Typed(size_t i, const char* name, napi_typedarray_type type, const char* typeName, size_t* count);
  napi_value Raw(size_t i) const { return info_[i]; }

  // Fails with a TypeError/RangeError built from the function name.
  void FailType(const std::string& what);
  void FailRange(const std::string& what);

 private:
  bool Number(size_t i, const char* name, double* out);
  const Napi::CallbackInfo& info_;
  Napi::Env env_;
  const char* fn_;
  bool ok_ = true;
};

// ---- module parts ------------------------------------------------------------------------------
void InitMemory(Napi::Env env, Napi::Object exports);
void InitVcpu(Napi::Env env, Napi::Object exports);
void InitPoll(Napi::Env env, Napi::Object exports);
void InitVsock(Napi::Env env, Napi::Object exports);
void InitLock(Napi::Env env, Napi::Object exports);  // lock.cc: OFD byte-range image locks
void InitTty(Napi::Env env, Napi::Object exports);  // tty.cc: process groups, job-control signals
void InitTap(Napi::Env env, Napi::Object exports);  // tap.cc: TUNSETIFF, TUNSETOFFLOAD, link up
void InitVhostUser(Napi::Env env, Napi::Object exports);  // vhost-user.cc: SCM_RIGHTS sockets, fd-region mmap
void InitSeccomp(Napi::Env env, Napi::Object exports);  // seccomp.cc: load a BPF program built in TS

// poll.cc: stop and close the calling env's uv_poll watchers on `fd` (close() calls this first, so a
// closed fd number is never left in the loop's epoll set).
void ForgetWatchedFd(napi_env env, int fd);

}  // namespace kindling
