// Terminal job control for the CLI's console (POSIX.1-2017 "General Terminal Interface", 11.1.4
// "Terminal Access Control"): a process may change a terminal's attributes (tcsetattr, which is how
// raw mode is entered) or read from it only while its process group is the terminal's foreground
// process group; a background process that tries is sent SIGTTOU / SIGTTIN, whose default action is
// to stop it. Node has no API for the process group or the terminal's foreground group, so the CLI
// asks here before it touches the terminal.
//
//   processGroup()                 getpgrp(): the calling process's process group id.
//   foregroundProcessGroup(fd)     tcgetpgrp(fd): the foreground process group of the terminal open
//                                  on fd; -1 when fd is not a terminal or it is not this process's
//                                  controlling terminal (ENOTTY), or fd is not open (EBADF). Other
//                                  errors throw.
//   ignoreJobControlStops()        SIGTTOU and SIGTTIN set to SIG_IGN, so that no terminal access can
//                                  stop the process: a write with TOSTOP set then proceeds, a
//                                  background read fails with EIO (never a stopped, silent process).
//                                  Ignoring (not catching: a caught SIGTTOU makes tcsetattr restart
//                                  and raise it again) is what the kernel's tty_check_change() allows.
//                                  Returns the previous dispositions as booleans (true = was ignored).
#include "common.h"

#include <errno.h>
#include <signal.h>
#include <termios.h>
#include <unistd.h>

namespace kindling {

namespace {

using Napi::CallbackInfo;
using Napi::Value;

Value ProcessGroup(const CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(getpgrp())); }

Value ForegroundProcessGroup(const CallbackInfo& info) {
  Args a(info, "foregroundProcessGroup");
  int fd = a.Fd(0, "fd");
  if (!a.ok()) return a.env().Undefined();
  pid_t pg = tcgetpgrp(fd);
  if (pg < 0) {
    if (errno == ENOTTY || errno == EBADF) return Napi::Number::New(a.env(), -1);
    return ThrowErrno(a.env(), "tcgetpgrp", errno);
  }
  return Napi::Number::New(a.env(), static_cast<double>(pg));
}

bool IgnoreSignal(int sig, bool* wasIgnored) {
  struct sigaction sa, old;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_IGN;
  sigemptyset(&sa.sa_mask);
  if (sigaction(sig, &sa, &old) < 0) return false;
  *wasIgnored = old.sa_handler == SIG_IGN;
  return true;
}

Value IgnoreJobControlStops(const CallbackInfo& info) {
  Napi::Env env = info.Env();
  bool ttou = false, ttin = false;
  if (!IgnoreSignal(SIGTTOU, &ttou)) return ThrowErrno(env, "sigaction(SIGTTOU)", errno);
  if (!IgnoreSignal(SIGTTIN, &ttin)) return ThrowErrno(env, "sigaction(SIGTTIN)", errno);
  Napi::Object o = Napi::Object::New(env);
  o.Set("ttou", Napi::Boolean::New(env, ttou));
  o.Set("ttin", Napi::Boolean::New(env, ttin));
  return o;
}

}  // namespace

void InitTty(Napi::Env env, Napi::Object exports) {
  exports.Set("processGroup", Napi::Function::New(env, ProcessGroup, "processGroup"));
  exports.Set("foregroundProcessGroup", Napi::Function::New(env, ForegroundProcessGroup, "foregroundProcessGroup"));
  exports.Set("ignoreJobControlStops", Napi::Function::New(env, IgnoreJobControlStops, "ignoreJobControlStops"));
}

}  // namespace kindling
