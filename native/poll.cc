// Waking JavaScript on an fd (KVM ioeventfds, eventfds): two mechanisms for I/O workers.
//
//   watchEventfd/watchFd  a uv_poll_t on the calling thread's own libuv loop. The JS callback runs from
//                         that loop, so the thread keeps timers, fs, sockets and postMessage.
//   epoll*                a plain epoll set; epollWait blocks the calling thread natively. With loopFd
//                         in the set and loopTimeout as its timeout, a worker can block there in place
//                         of its libuv loop and return to the loop only when libuv has work
//                         (src/io-worker/epoll-loop.ts).
//
// uv_poll hygiene (research §4, both found the hard way):
//   - A per-env cleanup hook stops and closes every watcher of the env at worker teardown; without it
//     Node's last loop turn in CleanupHandles() fires the callback into a dying env.
//   - JS is called with raw napi_make_callback (drains nextTicks/microtasks), its status is checked,
//     and a refused call (the env can no longer run JS) is dropped silently. A callback that throws
//     is reported with napi_fatal_exception, like a throwing 'data' handler.
//   - Memory is freed in the uv_close callback only.
// Watchers are touched only on their own thread: ids are process-unique, and another thread's id is
// simply unknown to the calling thread.
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include <cstddef>

static_assert(UV_VERSION_MAJOR == 1, "loopTimeout reads libuv 1.x's uv_loop_t.timer_heap");

#include <atomic>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace kindling {

namespace {

struct EnvState;

struct Watcher {
  uv_poll_t poll;  // first member: uv handle → Watcher
  EnvState* state;
  int id;
  int fd;
  bool drain;    // watchEventfd: read the counter natively, pass it as a bigint
  bool report;   // watchFdEvents: pass the ready events (UV_READABLE 1 | UV_WRITABLE 2) as a number
  bool closing = false;
  napi_ref cb = nullptr;
  napi_async_context async = nullptr;
};

struct EnvState {
  napi_env env;
  std::unordered_map<int, Watcher*> watchers;
};

std::atomic<int> g_nextId{1};

// napi_env → its state. Touched from each env's own thread at watch/unwatch/teardown only.
std::mutex& StatesMu() {
  static std::mutex* m = new std::mutex;
  return *m;
}
std::unordered_map<napi_env, EnvState*>& States() {
  static auto* m = new std::unordered_map<napi_env, EnvState*>;
  return *m;
}

EnvState* FindState(napi_env env) {
  std::lock_guard<std::mutex> lock(StatesMu());
  auto it = States().find(env);
  return it == States().end() ? nullptr : it->second;
}

void OnClosed(uv_handle_t* h) { delete reinterpret_cast<Watcher*>(h); }

// Stops and closes one watcher; releases its JS references. The Watcher is freed by OnClosed on a
// later loop turn, so a poll callback that is still on the stack (unwatch from inside the callback)
// may keep reading it.
void CloseWatcher(Watcher* w, bool releaseJs) {
  if (w->closing) return;
  w->closing = true;
  napi_env env = w->state->env;
  if (releaseJs) {
    if (w->cb) napi_delete_reference(env, w->cb);
    if (w->async) napi_async_destroy(env, w->async);
  }
  w->cb = nullptr;
  w->async = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(&w->poll), OnClosed);  // uv_poll_stop (EPOLL_CTL_DEL) happens now
}

// Env teardown (worker terminate/exit, process exit): close every watcher; never call JS again.
void EnvCleanup(void* arg) {
  EnvState* s = static_cast<EnvState*>(arg);
  {
    std::lock_guard<std::mutex> lock(StatesMu());
    States().erase(s->env);
  }
  for (auto& kv : s->watchers) CloseWatcher(kv.second, true);
  s->watchers.clear();
  delete s;
}

EnvState* GetOrCreateState(napi_env env) {
  if (EnvState* s = FindState(env)) return s;
  EnvState* s = new EnvState{env, {}};
  if (napi_add_env_cleanup_hook(env, EnvCleanup, s) != napi_ok) {
    delete s;
    return nullptr;
  }
  std::lock_guard<std::mutex> lock(StatesMu());
  States()[env] = s;
  return s;
}

// Reports an exception the callback left pending (if any). A refused call (the env can no longer run
// JS, e.g. during terminate()) leaves nothing pending and is dropped.
void ReportPending(napi_env env) {
  napi_value exc;
  if (napi_get_and_clear_last_exception(env, &exc) != napi_ok) return;
  napi_valuetype t = napi_undefined;
  napi_typeof(env, exc, &t);
  if (t == napi_undefined) return;
  if (napi_fatal_exception(env, exc) != napi_ok) {
    napi_value ignored;
    napi_get_and_clear_last_exception(env, &ignored);
  }
}

const char* UvCode(int err) {
  const char* n = uv_err_name(err);
  return n ? n : "EIO";
}

void OnPoll(uv_poll_t* handle, int status, int events) {
  Watcher* w = reinterpret_cast<Watcher*>(handle);
  if (w->closing || w->cb == nullptr) return;
  napi_env env = w->state->env;

  uint64_t count = 0;
  if (status >= 0 && w->drain) {
    ssize_t r;
    do r = read(w->fd, &count, sizeof count);
    while (r < 0 && errno == EINTR);
    if (r != static_cast<ssize_t>(sizeof count)) {
      if (r < 0 && errno == EAGAIN) return;  // spurious or drained by someone else
      status = r < 0 ? uv_translate_sys_error(errno) : UV_EIO;
    }
  }
  if (status < 0) uv_poll_stop(handle);  // reported once, below; unwatch() still closes it

  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value fn, recv, argv[3];
  size_t argc = 1;
  bool ok = napi_get_reference_value(env, w->cb, &fn) == napi_ok && fn != nullptr &&
            napi_get_global(env, &recv) == napi_ok && napi_create_int32(env, w->fd, &argv[0]) == napi_ok;
  if (ok && w->drain) {
    ok = napi_create_bigint_uint64(env, count, &argv[1]) == napi_ok;
    argc = 2;
  } else if (ok && w->report) {
    ok = napi_create_int32(env, status < 0 ? 0 : events, &argv[1]) == napi_ok;
    argc = 2;
  }
  if (ok && status < 0) {
    if (argc == 1) {
      napi_get_undefined(env, &argv[1]);
      argc = 2;
    }
    ok = napi_create_string_utf8(env, UvCode(status), NAPI_AUTO_LENGTH, &argv[2]) == napi_ok;
    argc = 3;
  }
  if (ok) {
    napi_value result;
    if (napi_make_callback(env, w->async, recv, fn, argc, argv, &result) != napi_ok) ReportPending(env);
  } else {
    napi_value ignored;
    napi_get_and_clear_last_exception(env, &ignored);
  }
  napi_close_handle_scope(env, scope);
}

// watchEventfd(fd, cb) / watchFd(fd, cb): readable only. watchFdEvents(fd, events, cb): the events
// given (UV_READABLE | UV_WRITABLE; 0 = registered but not polled), changed later with setWatchEvents.
Napi::Value Watch(const Napi::CallbackInfo& info, const char* fn, bool drain, bool report = false) {
  Args a(info, fn);
  int fd = a.Fd(0, "fd");
  uint32_t events = report ? a.U32(1, "events") : static_cast<uint32_t>(UV_READABLE);
  if (!a.ok()) return a.env().Undefined();
  Napi::Env env = a.env();
  const size_t cbArg = report ? 2 : 1;
  if (events & ~static_cast<uint32_t>(UV_READABLE | UV_WRITABLE)) return ThrowRange(env, std::string(fn) + ": events must be a mask of 1 (readable) and 2 (writable)");
  if (info.Length() <= cbArg || !info[cbArg].IsFunction()) return ThrowType(env, std::string(fn) + ": callback must be a function");
  if (fd < 0) return ThrowErrno(env, "uv_poll_init", EBADF);
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr)
    return ThrowErrno(env, "napi_get_uv_event_loop", EINVAL);
  EnvState* s = GetOrCreateState(env);
  if (!s) return ThrowErrno(env, "napi_add_env_cleanup_hook", ENOMEM);

  Watcher* w = new Watcher;
  w->state = s;
  w->fd = fd;
  w->drain = drain;
  w->report = report;
  int r = uv_poll_init(loop, &w->poll, fd);  // also sets O_NONBLOCK on the fd
  if (r < 0) {
    delete w;  // uv_poll_init failed before registering the handle
    return ThrowErrno(env, "uv_poll_init", -r);
  }
  napi_value name;
  napi_create_string_utf8(env, drain ? "kindling.watchEventfd" : "kindling.watchFd", NAPI_AUTO_LENGTH, &name);
  if (napi_create_reference(env, info[cbArg], 1, &w->cb) != napi_ok ||
      napi_async_init(env, nullptr, name, &w->async) != napi_ok) {
    CloseWatcher(w, true);
    return env.Undefined();  // the failed call left an exception pending
  }
  r = events != 0 ? uv_poll_start(&w->poll, static_cast<int>(events), OnPoll) : 0;
  if (r < 0) {
    CloseWatcher(w, true);
    return ThrowErrno(env, "uv_poll_start", -r);
  }
  int id;
  do id = g_nextId.fetch_add(1) & 0x3fffffff;
  while (id == 0);
  w->id = id;
  s->watchers[id] = w;
  return Napi::Number::New(env, id);
}

Napi::Value WatchEventfd(const Napi::CallbackInfo& info) { return Watch(info, "watchEventfd", true); }
Napi::Value WatchFd(const Napi::CallbackInfo& info) { return Watch(info, "watchFd", false); }
Napi::Value WatchFdEvents(const Napi::CallbackInfo& info) { return Watch(info, "watchFdEvents", false, true); }

Watcher* FindWatcher(napi_env env, int id) {
  EnvState* s = FindState(env);
  if (!s) return nullptr;
  auto it = s->watchers.find(id);
  return it == s->watchers.end() ? nullptr : it->second;
}

Napi::Value Unwatch(const Napi::CallbackInfo& info) {
  Args a(info, "unwatch");
  int id = a.I32(0, "id");
  if (!a.ok()) return a.env().Undefined();
  Watcher* w = FindWatcher(a.env(), id);
  if (!w) return Napi::Boolean::New(a.env(), false);
  w->state->watchers.erase(id);
  CloseWatcher(w, true);
  return Napi::Boolean::New(a.env(), true);
}

// setWatchEvents(id, events): poll a watchFdEvents watcher for other events (0 stops polling; the
// handle stays). False for an unknown id.
Napi::Value SetWatchEvents(const Napi::CallbackInfo& info) {
  Args a(info, "setWatchEvents");
  int id = a.I32(0, "id");
  uint32_t events = a.U32(1, "events");
  if (!a.ok()) return a.env().Undefined();
  if (events & ~static_cast<uint32_t>(UV_READABLE | UV_WRITABLE)) return ThrowRange(a.env(), "setWatchEvents: events must be a mask of 1 (readable) and 2 (writable)");
  Watcher* w = FindWatcher(a.env(), id);
  if (!w || w->closing) return Napi::Boolean::New(a.env(), false);
  int r = events == 0 ? uv_poll_stop(&w->poll) : uv_poll_start(&w->poll, static_cast<int>(events), OnPoll);
  if (r < 0) return ThrowErrno(a.env(), "uv_poll_start", -r);
  return Napi::Boolean::New(a.env(), true);
}

Napi::Value RefWatch(const Napi::CallbackInfo& info) {
  Args a(info, "refWatch");
  int id = a.I32(0, "id");
  if (!a.ok()) return a.env().Undefined();
  bool ref = info.Length() < 2 || info[1].ToBoolean().Value();
  Watcher* w = FindWatcher(a.env(), id);
  if (!w) return Napi::Boolean::New(a.env(), false);
  uv_handle_t* h = reinterpret_cast<uv_handle_t*>(&w->poll);
  if (ref) uv_ref(h);
  else uv_unref(h);
  return Napi::Boolean::New(a.env(), true);
}

// ---- epoll ---------------------------------------------------------------------------------------
// epoll_event.data.u64 = drain << 63 | fd << 32 | (uint32) token

constexpr uint64_t kDrainBit = 1ULL << 63;

Napi::Value EpollCreate(const Napi::CallbackInfo& info) {
  int fd = epoll_create1(EPOLL_CLOEXEC);
  if (fd < 0) return ThrowErrno(info.Env(), "epoll_create1", errno);
  return Napi::Number::New(info.Env(), fd);
}

// epollAdd(epfd, fd, token, drain?, events?) / epollMod(epfd, fd, token, events, drain?): events is a
// mask of 1 (EPOLLIN) and 2 (EPOLLOUT), default 1; level-triggered.
Napi::Value EpollCtl(const Napi::CallbackInfo& info, const char* fn, int op) {
  Args a(info, fn);
  int epfd = a.Fd(0, "epfd");
  int fd = a.Fd(1, "fd");
  int32_t token = a.I32(2, "token");
  if (!a.ok()) return a.env().Undefined();
  bool add = op == EPOLL_CTL_ADD;
  size_t di = add ? 3 : 4, ei = add ? 4 : 3;
  bool drain = info.Length() > di && info[di].ToBoolean().Value();
  uint32_t events = 1;
  if (info.Length() > ei && !info[ei].IsUndefined()) {
    events = a.U32(ei, "events");
    if (!a.ok()) return a.env().Undefined();
    if (events == 0 || events > 3) return ThrowRange(a.env(), std::string(fn) + ": events must be 1 (readable), 2 (writable) or 3");
  }
  if (fd < 0) return ThrowErrno(a.env(), "epoll_ctl", EBADF);
  if (drain) {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return ThrowErrno(a.env(), "fcntl", errno);
  }
  epoll_event ev{};
  ev.events = ((events & 1) ? static_cast<uint32_t>(EPOLLIN) : 0u) | ((events & 2) ? static_cast<uint32_t>(EPOLLOUT) : 0u);
  ev.data.u64 = (drain ? kDrainBit : 0) | (static_cast<uint64_t>(fd) << 32) | static_cast<uint32_t>(token);
  if (epoll_ctl(epfd, op, fd, &ev) < 0) return ThrowErrno(a.env(), "epoll_ctl", errno);
  return a.env().Undefined();
}

Napi::Value EpollAdd(const Napi::CallbackInfo& info) { return EpollCtl(info, "epollAdd", EPOLL_CTL_ADD); }
Napi::Value EpollMod(const Napi::CallbackInfo& info) { return EpollCtl(info, "epollMod", EPOLL_CTL_MOD); }

// loopFd(): the calling thread's libuv backend fd (an epoll fd: readable while libuv has I/O to
// handle, e.g. a MessagePort message). loopTimeout(): after updating the loop's clock, the ms until
// its earliest timer is due (0: due now), -1 when it has none. A thread that blocks in epollWait
// instead of its libuv loop waits on both and returns to the loop when either fires.
//
// Not uv_backend_timeout(): called from JS that runs inside a setImmediate callback, as the waiting
// worker's is, that returns 0 (Node's immediate idle handle is still active until the callback
// returns). The earliest timer is the min of libuv's timer heap (a field of uv_loop_t in libuv 1.x's
// public header; the heap node is uv_timer_t.heap_node), and uv_timer_get_due_in() is public.
uv_loop_t* ThreadLoop(napi_env env) {
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) return nullptr;
  return loop;
}

Napi::Value LoopFd(const Napi::CallbackInfo& info) {
  uv_loop_t* loop = ThreadLoop(info.Env());
  if (!loop) return ThrowErrno(info.Env(), "napi_get_uv_event_loop", EINVAL);
  return Napi::Number::New(info.Env(), uv_backend_fd(loop));
}

Napi::Value LoopTimeout(const Napi::CallbackInfo& info) {
  uv_loop_t* loop = ThreadLoop(info.Env());
  if (!loop) return ThrowErrno(info.Env(), "napi_get_uv_event_loop", EINVAL);
  uv_update_time(loop);
  void* min = loop->timer_heap.min;
  if (min == nullptr) return Napi::Number::New(info.Env(), -1);
  const uv_timer_t* t = reinterpret_cast<const uv_timer_t*>(static_cast<char*>(min) - offsetof(uv_timer_t, heap_node));
  uint64_t due = uv_timer_get_due_in(t);
  return Napi::Number::New(info.Env(), static_cast<double>(due > INT32_MAX ? INT32_MAX : due));
}

Napi::Value EpollDel(const Napi::CallbackInfo& info) {
  Args a(info, "epollDel");
  int epfd = a.Fd(0, "epfd");
  int fd = a.Fd(1, "fd");
  if (!a.ok()) return a.env().Undefined();
  epoll_event ev{};  // non-null for pre-2.6.9 kernels
  if (epoll_ctl(epfd, EPOLL_CTL_DEL, fd, &ev) < 0) return ThrowErrno(a.env(), "epoll_ctl", errno);
  return a.env().Undefined();
}

Napi::Value EpollWait(const Napi::CallbackInfo& info) {
  Args a(info, "epollWait");
  int epfd = a.Fd(0, "epfd");
  size_t n = 0;
  int32_t* tokens = static_cast<int32_t*>(a.Typed(1, "tokens", napi_int32_array, "Int32Array", &n));
  int32_t timeout = a.I32(2, "timeoutMs");
  size_t nc = 0, nr = 0;
  uint64_t* counts = nullptr;
  int32_t* ready = nullptr;
  if (info.Length() > 3 && !info[3].IsUndefined())
    counts = static_cast<uint64_t*>(a.Typed(3, "counts", napi_biguint64_array, "BigUint64Array", &nc));
  if (info.Length() > 4 && !info[4].IsUndefined())
    ready = static_cast<int32_t*>(a.Typed(4, "ready", napi_int32_array, "Int32Array", &nr));
  if (!a.ok()) return a.env().Undefined();
  if (n == 0) return ThrowRange(a.env(), "epollWait: tokens must not be empty");
  if (counts && nc < n) return ThrowRange(a.env(), "epollWait: counts must be at least as long as tokens");
  if (ready && nr < n) return ThrowRange(a.env(), "epollWait: ready must be at least as long as tokens");
  if (timeout < -1) timeout = -1;
  constexpr size_t kMax = 256;
  if (n > kMax) n = kMax;
  epoll_event evs[kMax];
  int r = epoll_wait(epfd, evs, static_cast<int>(n), timeout);
  if (r < 0) {
    if (errno == EINTR) return Napi::Number::New(a.env(), 0);
    return ThrowErrno(a.env(), "epoll_wait", errno);
  }
  for (int i = 0; i < r; i++) {
    uint64_t d = evs[i].data.u64;
    tokens[i] = static_cast<int32_t>(static_cast<uint32_t>(d));
    if (ready) {
      // An error or hang-up is reported as both: the owner's next read or write sees it.
      uint32_t e = evs[i].events;
      bool bad = (e & (EPOLLERR | EPOLLHUP)) != 0;
      ready[i] = ((e & (EPOLLIN | EPOLLRDHUP)) || bad ? 1 : 0) | ((e & EPOLLOUT) || bad ? 2 : 0);
    }
    if (!counts) continue;
    uint64_t v = 0;
    if (d & kDrainBit) {
      int fd = static_cast<int>((d >> 32) & 0x7fffffff);
      ssize_t rr;
      do rr = read(fd, &v, sizeof v);
      while (rr < 0 && errno == EINTR);
      if (rr != static_cast<ssize_t>(sizeof v)) v = 0;
    }
    counts[i] = v;
  }
  return Napi::Number::New(a.env(), r);
}

// ---- benchmark helpers (bench/eventfd-wakeup.mjs) ----------------------------------------------

bool WriteOne(int fd) {
  uint64_t one = 1;
  ssize_t r;
  do r = write(fd, &one, sizeof one);
  while (r < 0 && errno == EINTR);
  return r == static_cast<ssize_t>(sizeof one);
}

bool ReadBlocking(int fd) {
  uint64_t v;
  ssize_t r;
  do r = read(fd, &v, sizeof v);
  while (r < 0 && errno == EINTR);
  return r == static_cast<ssize_t>(sizeof v);
}

// `rounds` times: write 1 to txFd, block reading rxFd. Returns elapsed nanoseconds (CLOCK_MONOTONIC).
Napi::Value BenchEventfdPingPong(const Napi::CallbackInfo& info) {
  Args a(info, "benchEventfdPingPong");
  int tx = a.Fd(0, "txFd");
  int rx = a.Fd(1, "rxFd");
  uint64_t rounds = a.Size(2, "rounds", UINT32_MAX);
  if (!a.ok()) return a.env().Undefined();
  timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (uint64_t i = 0; i < rounds; i++) {
    if (!WriteOne(tx)) return ThrowErrno(a.env(), "write", errno);
    if (!ReadBlocking(rx)) return ThrowErrno(a.env(), "read", errno);
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double ns = (t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec);
  return Napi::Number::New(a.env(), ns);
}

// `rounds` times: block reading rxFd, write 1 to txFd (the pure C side of the C↔C baseline).
Napi::Value BenchEventfdEcho(const Napi::CallbackInfo& info) {
  Args a(info, "benchEventfdEcho");
  int rx = a.Fd(0, "rxFd");
  int tx = a.Fd(1, "txFd");
  uint64_t rounds = a.Size(2, "rounds", UINT32_MAX);
  if (!a.ok()) return a.env().Undefined();
  for (uint64_t i = 0; i < rounds; i++) {
    if (!ReadBlocking(rx)) return ThrowErrno(a.env(), "read", errno);
    if (!WriteOne(tx)) return ThrowErrno(a.env(), "write", errno);
  }
  return a.env().Undefined();
}

}  // namespace

void ForgetWatchedFd(napi_env env, int fd) {
  EnvState* s = FindState(env);
  if (!s) return;
  for (auto it = s->watchers.begin(); it != s->watchers.end();) {
    if (it->second->fd == fd) {
      CloseWatcher(it->second, true);
      it = s->watchers.erase(it);
    } else {
      ++it;
    }
  }
}

void InitPoll(Napi::Env env, Napi::Object exports) {
  exports.Set("watchEventfd", Napi::Function::New(env, WatchEventfd, "watchEventfd"));
  exports.Set("watchFd", Napi::Function::New(env, WatchFd, "watchFd"));
  exports.Set("watchFdEvents", Napi::Function::New(env, WatchFdEvents, "watchFdEvents"));
  exports.Set("setWatchEvents", Napi::Function::New(env, SetWatchEvents, "setWatchEvents"));
  exports.Set("unwatch", Napi::Function::New(env, Unwatch, "unwatch"));
  exports.Set("refWatch", Napi::Function::New(env, RefWatch, "refWatch"));
  exports.Set("epollCreate", Napi::Function::New(env, EpollCreate, "epollCreate"));
  exports.Set("epollAdd", Napi::Function::New(env, EpollAdd, "epollAdd"));
  exports.Set("epollMod", Napi::Function::New(env, EpollMod, "epollMod"));
  exports.Set("loopFd", Napi::Function::New(env, LoopFd, "loopFd"));
  exports.Set("loopTimeout", Napi::Function::New(env, LoopTimeout, "loopTimeout"));
  exports.Set("epollDel", Napi::Function::New(env, EpollDel, "epollDel"));
  exports.Set("epollWait", Napi::Function::New(env, EpollWait, "epollWait"));
  exports.Set("benchEventfdPingPong", Napi::Function::New(env, BenchEventfdPingPong, "benchEventfdPingPong"));
  exports.Set("benchEventfdEcho", Napi::Function::New(env, BenchEventfdEcho, "benchEventfdEcho"));
}

}  // namespace kindling
