// seccomp (Linux Documentation/userspace-api/seccomp_filter.rst, seccomp(2)): the addon only loads a
// classic-BPF program that TypeScript built (src/seccomp/bpf.ts from the per-role allowlists in
// src/seccomp/roles.ts). Nothing here knows a syscall number or a policy.
//
//   seccompInstall(program, tsync)  program: a Uint8Array of struct sock_filter (8 bytes each: u16 code,
//                                   u8 jt, u8 jf, u32 k, host byte order, as <linux/filter.h> lays them
//                                   out). Sets PR_SET_NO_NEW_PRIVS (required for an unprivileged
//                                   filter, and it keeps execve from gaining privileges even for root),
//                                   then seccomp(SECCOMP_SET_MODE_FILTER). The filter applies to the
//                                   calling thread and to threads it creates afterwards; with tsync,
//                                   SECCOMP_FILTER_FLAG_TSYNC applies it to every thread of the process
//                                   (the kernel refuses, naming a thread id, when some thread's filter
//                                   tree is not an ancestor of the caller's: that is thrown). Filters
//                                   stack and can never be removed. SECCOMP_FILTER_FLAG_LOG makes the
//                                   kernel log every action other than ALLOW (the audit record type 1326
//                                   names the thread's comm and the syscall).
//   seccompMode()                   prctl(PR_GET_SECCOMP) for the calling thread: 0 none, 2 filter.
//   setThreadName(name)             prctl(PR_SET_NAME) (15 bytes + NUL): what /proc/<pid>/task/<tid>/comm,
//                                   ps -L and the kernel's seccomp audit record show for this thread.
//   unlinkAt(dirfd, name)           unlinkat(dirfd, name, 0): the one file-system change a filtered
//                                   process makes (`kindling vhost-user` removing its socket on exit;
//                                   its filter allows unlinkat only on the directory fd it opened
//                                   before installing it). name must be a single path component.
//   probeSyscall(nr, a0, a1, a2)    syscall(nr, a0, a1, a2) with numeric arguments and the result as
//                                   -errno or the return value. Tests call it from a filtered thread to
//                                   show that a forbidden syscall is refused (ptrace, a non-KVM ioctl);
//                                   it gives JS no power the process does not already have (the fd and
//                                   pointer-free calls only: pointer arguments are passed as numbers and
//                                   tests pass 0).
#include "common.h"

#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <vector>

namespace kindling {

namespace {

using Napi::CallbackInfo;
using Napi::Value;

Value SeccompInstall(const CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsTypedArray() || !info[1].IsBoolean()) {
    Napi::TypeError::New(env, "seccompInstall(program: Uint8Array, tsync: boolean)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::TypedArray ta = info[0].As<Napi::TypedArray>();
  if (ta.TypedArrayType() != napi_uint8_array) {
    Napi::TypeError::New(env, "seccompInstall: program must be a Uint8Array").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Uint8Array bytes = ta.As<Napi::Uint8Array>();
  size_t len = bytes.ByteLength();
  // BPF_MAXINSNS (4096) is the kernel's limit for one program.
  if (len == 0 || len % sizeof(sock_filter) != 0 || len / sizeof(sock_filter) > BPF_MAXINSNS) {
    Napi::RangeError::New(env, "seccompInstall: program must be 1..4096 sock_filter instructions (8 bytes each)")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::vector<sock_filter> insns(len / sizeof(sock_filter));
  std::memcpy(insns.data(), bytes.Data(), len);
  sock_fprog prog;
  prog.len = static_cast<unsigned short>(insns.size());
  prog.filter = insns.data();
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return ThrowErrno(env, "prctl(PR_SET_NO_NEW_PRIVS)", errno);
  unsigned flags = SECCOMP_FILTER_FLAG_LOG;
  if (info[1].As<Napi::Boolean>().Value()) flags |= SECCOMP_FILTER_FLAG_TSYNC;
  long r = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
  if (r > 0) {
    // TSYNC: r is the id of a thread that could not be synchronised.
    Napi::Error::New(env, "seccomp(SECCOMP_SET_MODE_FILTER, TSYNC): thread " + std::to_string(r) +
                              " has a filter that is not an ancestor of this thread's")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (r < 0) return ThrowErrno(env, "seccomp(SECCOMP_SET_MODE_FILTER)", errno);
  return env.Undefined();
}

Value SeccompMode(const CallbackInfo& info) {
  int m = prctl(PR_GET_SECCOMP, 0, 0, 0, 0);
  if (m < 0) return ThrowErrno(info.Env(), "prctl(PR_GET_SECCOMP)", errno);
  return Napi::Number::New(info.Env(), m);
}

Value SetThreadName(const CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) {
    Napi::TypeError::New(env, "setThreadName(name: string)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string name = info[0].As<Napi::String>().Utf8Value();
  if (name.size() > 15) name.resize(15);
  if (prctl(PR_SET_NAME, name.c_str(), 0, 0, 0) != 0) return ThrowErrno(env, "prctl(PR_SET_NAME)", errno);
  return env.Undefined();
}

Value UnlinkAt(const CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsString()) {
    Napi::TypeError::New(env, "unlinkAt(dirfd: number, name: string)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int dirfd = info[0].As<Napi::Number>().Int32Value();
  std::string name = info[1].As<Napi::String>().Utf8Value();
  if (name.empty() || name.find('/') != std::string::npos || name == "." || name == ".." || name.find('\0') != std::string::npos) {
    Napi::TypeError::New(env, "unlinkAt: name must be one path component").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (unlinkat(dirfd, name.c_str(), 0) != 0) return ThrowErrno(env, "unlinkat", errno);
  return env.Undefined();
}

Value ProbeSyscall(const CallbackInfo& info) {
  Napi::Env env = info.Env();
  long a[4] = {0, 0, 0, 0};
  for (size_t i = 0; i < 4 && i < info.Length(); i++) {
    if (!info[i].IsNumber()) {
      Napi::TypeError::New(env, "probeSyscall(nr, a0?, a1?, a2?): numbers").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    a[i] = static_cast<long>(info[i].As<Napi::Number>().Int64Value());
  }
  long r = syscall(a[0], a[1], a[2], a[3]);
  return Napi::Number::New(env, static_cast<double>(r < 0 ? -errno : r));
}

}  // namespace

void InitSeccomp(Napi::Env env, Napi::Object exports) {
  exports.Set("seccompInstall", Napi::Function::New(env, SeccompInstall, "seccompInstall"));
  exports.Set("seccompMode", Napi::Function::New(env, SeccompMode, "seccompMode"));
  exports.Set("setThreadName", Napi::Function::New(env, SetThreadName, "setThreadName"));
  exports.Set("unlinkAt", Napi::Function::New(env, UnlinkAt, "unlinkAt"));
  exports.Set("probeSyscall", Napi::Function::New(env, ProbeSyscall, "probeSyscall"));
}

}  // namespace kindling
