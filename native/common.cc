// Shared helpers: errno names, JS errors, argument parsing, buffer access.
#include "common.h"

#include <errno.h>
#include <sys/ioctl.h>

#include <cmath>
#include <cstdio>

namespace kindling {

namespace {
struct ErrnoEntry {
  int num;
  const char* name;
};
// The errnos a VMM meets; anything else is reported as "E<num>".
const ErrnoEntry kErrnos[] = {
    {EPERM, "EPERM"},         {ENOENT, "ENOENT"},       {ESRCH, "ESRCH"},
    {EINTR, "EINTR"},         {EIO, "EIO"},             {ENXIO, "ENXIO"},
    {E2BIG, "E2BIG"},         {ENOEXEC, "ENOEXEC"},     {EBADF, "EBADF"},
    {ECHILD, "ECHILD"},       {EAGAIN, "EAGAIN"},       {ENOMEM, "ENOMEM"},
    {EACCES, "EACCES"},       {EFAULT, "EFAULT"},       {EBUSY, "EBUSY"},
    {EEXIST, "EEXIST"},       {EXDEV, "EXDEV"},         {ENODEV, "ENODEV"},
    {ENOTDIR, "ENOTDIR"},     {EISDIR, "EISDIR"},       {EINVAL, "EINVAL"},
    {ENFILE, "ENFILE"},       {EMFILE, "EMFILE"},       {ENOTTY, "ENOTTY"},
    {ETXTBSY, "ETXTBSY"},     {EFBIG, "EFBIG"},         {ENOSPC, "ENOSPC"},
    {ESPIPE, "ESPIPE"},       {EROFS, "EROFS"},         {EMLINK, "EMLINK"},
    {EPIPE, "EPIPE"},         {EDOM, "EDOM"},           {ERANGE, "ERANGE"},
    {EDEADLK, "EDEADLK"},     {ENAMETOOLONG, "ENAMETOOLONG"}, {ENOLCK, "ENOLCK"},
    {ENOSYS, "ENOSYS"},       {ENOTEMPTY, "ENOTEMPTY"}, {ELOOP, "ELOOP"},
    {ENODATA, "ENODATA"},     {EOVERFLOW, "EOVERFLOW"}, {EOPNOTSUPP, "EOPNOTSUPP"},
    {ETIMEDOUT, "ETIMEDOUT"}, {ECANCELED, "ECANCELED"}, {EDQUOT, "EDQUOT"},
    {ESTALE, "ESTALE"},       {EHWPOISON, "EHWPOISON"}, {ENOTSOCK, "ENOTSOCK"},
    {ECONNREFUSED, "ECONNREFUSED"}, {EADDRINUSE, "EADDRINUSE"},
};
}  // namespace

const char* ErrnoName(int err, char* buf, size_t len) {
  for (const auto& e : kErrnos)
    if (e.num == err) return e.name;
  snprintf(buf, len, "E%d", err);
  return buf;
}

Napi::Value ThrowErrno(Napi::Env env, const char* syscall, int err) {
  char nbuf[16];
  char sbuf[256];
  const char* code = ErrnoName(err, nbuf, sizeof nbuf);
  const char* msg = strerror_r(err, sbuf, sizeof sbuf);  // GNU variant
  std::string text = std::string(syscall) + " failed: " + msg + " (" + code + ")";
  Napi::Error e = Napi::Error::New(env, text);
  Napi::Object o = e.Value();
  o.Set("code", Napi::String::New(env, code));
  o.Set("errno", Napi::Number::New(env, err));
  o.Set("syscall", Napi::String::New(env, syscall));
  e.ThrowAsJavaScriptException();
  return env.Undefined();
}

Napi::Value ThrowType(Napi::Env env, const std::string& msg) {
  Napi::TypeError::New(env, msg).ThrowAsJavaScriptException();
  return env.Undefined();
}

Napi::Value ThrowRange(Napi::Env env, const std::string& msg) {
  Napi::RangeError::New(env, msg).ThrowAsJavaScriptException();
  return env.Undefined();
}

int IoctlRetry(int fd, unsigned long req, unsigned long arg) {
  int r;
  do r = ioctl(fd, req, arg);
  while (r < 0 && errno == EINTR);
  return r;
}

bool BufferData(napi_value v, bool allowPlain, void** data, size_t* len) {
  if (v == nullptr) return false;
  v8::Local<v8::Value> l = ToV8(v);
  if (l->IsSharedArrayBuffer()) {
    v8::Local<v8::SharedArrayBuffer> s = l.As<v8::SharedArrayBuffer>();
    *data = s->Data();
    *len = s->ByteLength();
    return true;
  }
  if (allowPlain && l->IsArrayBuffer()) {
    v8::Local<v8::ArrayBuffer> a = l.As<v8::ArrayBuffer>();
    *data = a->Data();
    *len = a->ByteLength();
    return true;
  }
  return false;
}

// ---- Args --------------------------------------------------------------------------------------

void Args::FailType(const std::string& what) {
  if (!ok_) return;
  ok_ = false;
  ThrowType(env_, std::string(fn_) + ": " + what);
}

void Args::FailRange(const std::string& what) {
  if (!ok_) return;
  ok_ = false;
  ThrowRange(env_, std::string(fn_) + ": " + what);
}

bool Args::Number(size_t i, const char* name, double* out) {
  if (!ok_) return false;
  napi_value v = info_[i];
  napi_valuetype t;
  if (napi_typeof(env_, v, &t) != napi_ok || t != napi_number) {
    FailType(std::string(name) + " must be a number");
    return false;
  }
  napi_get_value_double(env_, v, out);
  if (!std::isfinite(*out) || std::trunc(*out) != *out) {
    FailRange(std::string(name) + " must be an integer");
    return false;
  }
  return true;
}

int32_t Args::Fd(size_t i, const char* name) { return I32(i, name); }

int32_t Args::I32(size_t i, const char* name) {
  double d;
  if (!Number(i, name, &d)) return -1;
  if (d < INT32_MIN || d > INT32_MAX) {
    FailRange(std::string(name) + " is out of int32 range");
    return -1;
  }
  return static_cast<int32_t>(d);
}

uint32_t Args::U32(size_t i, const char* name) {
  double d;
  if (!Number(i, name, &d)) return 0;
  if (d < 0 || d > UINT32_MAX) {
    FailRange(std::string(name) + " is out of uint32 range");
    return 0;
  }
  return static_cast<uint32_t>(d);
}

uint64_t Args::Size(size_t i, const char* name, uint64_t max) {
  double d;
  if (!Number(i, name, &d)) return 0;
  if (d < 0 || d > static_cast<double>(max)) {
    FailRange(std::string(name) + " is out of range (0.." + std::to_string(max) + ")");
    return 0;
  }
  return static_cast<uint64_t>(d);
}

uint64_t Args::U64(size_t i, const char* name) {
  if (!ok_) return 0;
  napi_value v = info_[i];
  napi_valuetype t;
  if (napi_typeof(env_, v, &t) != napi_ok) t = napi_undefined;
  if (t == napi_bigint) {
    uint64_t r = 0;
    bool lossless = false;
    napi_get_value_bigint_uint64(env_, v, &r, &lossless);
    if (!lossless) {
      FailRange(std::string(name) + " must fit in an unsigned 64-bit integer");
      return 0;
    }
    return r;
  }
  if (t == napi_number) return Size(i, name, (1ULL << 53) - 1);
  FailType(std::string(name) + " must be a bigint");
  return 0;
}

int64_t Args::I64(size_t i, const char* name) {
  if (!ok_) return 0;
  napi_value v = info_[i];
  napi_valuetype t;
  if (napi_typeof(env_, v, &t) != napi_ok) t = napi_undefined;
  if (t == napi_bigint) {
    int64_t r = 0;
    bool lossless = false;
    napi_get_value_bigint_int64(env_, v, &r, &lossless);
    if (!lossless) {
      FailRange(std::string(name) + " must fit in a signed 64-bit integer");
      return 0;
    }
    return r;
  }
  if (t == napi_number) {
    double d;
    if (!Number(i, name, &d)) return 0;
    if (std::fabs(d) > 9007199254740991.0) {
      FailRange(std::string(name) + " is not a safe integer");
      return 0;
    }
    return static_cast<int64_t>(d);
  }
  FailType(std::string(name) + " must be a bigint");
  return 0;
}

std::string Args::Str(size_t i, const char* name) {
  if (!ok_) return std::string();
  Napi::Value v = info_[i];
  if (!v.IsString()) {
    FailType(std::string(name) + " must be a string");
    return std::string();
  }
  std::string s = v.As<Napi::String>().Utf8Value();
  if (s.find('\0') != std::string::npos) {
    FailType(std::string(name) + " must not contain NUL characters");
    return std::string();
  }
  return s;
}

void* Args::Typed(size_t i, const char* name, napi_typedarray_type type, const char* typeName, size_t* count) {
  *count = 0;
  if (!ok_) return nullptr;
  napi_value v = info_[i];
  bool is = false;
  napi_is_typedarray(env_, v, &is);
  napi_typedarray_type t;
  size_t n = 0;
  void* data = nullptr;
  if (is) napi_get_typedarray_info(env_, v, &t, &n, &data, nullptr, nullptr);
  if (!is || t != type) {
    FailType(std::string(name) + " must be a " + typeName);
    return nullptr;
  }
  *count = n;
  return data;
}

uint8_t* Args::Bytes(size_t i, const char* name, size_t size, size_t* lenOut) {
  size_t n = 0;
  void* p = Typed(i, name, napi_uint8_array, "Uint8Array", &n);
  if (!ok_) return nullptr;
  if (size != 0 && n != size) {
    FailRange(std::string(name) + " must be exactly " + std::to_string(size) + " bytes (got " +
              std::to_string(n) + ")");
    return nullptr;
  }
  if (lenOut) *lenOut = n;
  return static_cast<uint8_t*>(p);
}

}  // namespace kindling
