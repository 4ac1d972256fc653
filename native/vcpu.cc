// vCPU threads: the kvm_run mapping, KVM_RUN, and the SIGRTMIN kick.
//
// One process-wide SIGRTMIN handler (installed once, SA_SIGINFO, no SA_RESTART) stores 1 to
// kvm_run->immediate_exit through a thread-local pointer, so a kick that lands outside KVM_RUN makes
// the next KVM_RUN return EINTR at once (Firecracker's scheme). Kicks are coalesced by a per-vCPU
// pending flag: only its 0→1 transition sends a signal; run() clears it after an EINTR.
#include "common.h"

#include <errno.h>
#include "kvm_headers.h"
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <atomic>
#include <map>
#include <mutex>

namespace kindling {

namespace {

// The handler's view of "the kvm_run of the vCPU this thread runs". initial-exec TLS: no lazy
// allocation (__tls_get_addr) inside the signal handler.
thread_local kvm_run* t_run __attribute__((tls_model("initial-exec"))) = nullptr;

inline void SetThreadRun(kvm_run* r) {
  __atomic_store_n(&t_run, r, __ATOMIC_RELAXED);
  std::atomic_signal_fence(std::memory_order_seq_cst);
}

void OnKick(int, siginfo_t*, void*) {
  kvm_run* r = __atomic_load_n(&t_run, __ATOMIC_RELAXED);
  if (r) __atomic_store_n(&r->immediate_exit, 1, __ATOMIC_RELAXED);
}

constexpr int kSlotBits = 10;
constexpr int kMaxSlots = 1 << kSlotBits;

struct VcpuSlot {
  std::atomic<int> handle;   // 0 = free; otherwise (generation << kSlotBits) | index, < 2^30
  pthread_t thread;
  kvm_run* run;
  size_t runSize;
  std::atomic<int> pending;  // a kick signal was sent and not yet consumed by run()
  bool alive;
  int vcpuFd;
};

VcpuSlot g_slots[kMaxSlots];  // static storage, trivially destructible
uint32_t g_generation = 0;    // under Mu()

std::mutex& Mu() {
  static std::mutex* m = new std::mutex;  // never destroyed (thread-exit destructors use it)
  return *m;
}

// kvm_run mappings made by mapRun(): base → size. Under Mu().
std::map<uintptr_t, size_t>& Runs() {
  static auto* m = new std::map<uintptr_t, size_t>;
  return *m;
}

VcpuSlot* Find(int h) {
  if (h <= 0) return nullptr;
  VcpuSlot* s = &g_slots[h & (kMaxSlots - 1)];
  return s->handle.load() == h ? s : nullptr;
}

// Under Mu().
void FreeSlotLocked(VcpuSlot* s) {
  s->alive = false;
  s->pending.store(0);
  s->handle.store(0);
}

// Under Mu(): kick one live slot. True if a signal was sent.
bool KickLocked(VcpuSlot* s) {
  if (!s->alive) return false;
  if (s->pending.exchange(1) != 0) return false;
  if (pthread_kill(s->thread, SIGRTMIN) != 0) {
    s->pending.store(0);
    return false;
  }
  return true;
}

// Safety net: a thread that exits (e.g. worker.terminate()) without unregisterVcpuThread must never
// be pthread_kill'ed afterwards.
struct ThreadGuard {
  bool armed = false;
  ~ThreadGuard() {
    if (!armed) return;
    SetThreadRun(nullptr);
    std::lock_guard<std::mutex> lock(Mu());
    pthread_t self = pthread_self();
    for (VcpuSlot& s : g_slots)
      if (s.handle.load() != 0 && pthread_equal(s.thread, self)) FreeSlotLocked(&s);
  }
};
thread_local ThreadGuard t_guard;

void InstallKickHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = OnKick;
    sa.sa_flags = SA_SIGINFO;  // deliberately no SA_RESTART: KVM_RUN must return EINTR
    sigemptyset(&sa.sa_mask);
    sigaction(SIGRTMIN, &sa, nullptr);
  });
}

void RunFinalizer(Napi::Env, void* data, void* hint) {
  size_t size = reinterpret_cast<size_t>(hint);
  {
    std::lock_guard<std::mutex> lock(Mu());
    Runs().erase(reinterpret_cast<uintptr_t>(data));
    for (VcpuSlot& s : g_slots)
      if (s.handle.load() != 0 && s.run == data) FreeSlotLocked(&s);
    if (__atomic_load_n(&t_run, __ATOMIC_RELAXED) == data) SetThreadRun(nullptr);
  }
  munmap(data, size);
}

// Common tail of an interrupted KVM_RUN: immediate_exit first, then pending (a kick in between is
// coalesced into the EINTR being returned; the reverse order could lose it and leave pending stuck).
inline void ClearKick(VcpuSlot* s) {
  __atomic_store_n(&s->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
  s->pending.store(0, std::memory_order_seq_cst);
}

// Resolves the handle for run()/benchRunPioLoop() on the calling thread.
VcpuSlot* OwnSlot(Args& a, int h) {
  if (!a.ok()) return nullptr;
  VcpuSlot* s = Find(h);
  if (!s) {
    a.FailRange("unknown or unregistered vCPU handle " + std::to_string(h));
    return nullptr;
  }
  if (!pthread_equal(s->thread, pthread_self())) {
    a.FailRange("vCPU handle " + std::to_string(h) + " belongs to another thread");
    return nullptr;
  }
  if (__atomic_load_n(&t_run, __ATOMIC_RELAXED) != s->run) SetThreadRun(s->run);
  return s;
}

// ---- JS functions ------------------------------------------------------------------------------

Napi::Value MapRun(const Napi::CallbackInfo& info) {
  Args a(info, "mapRun");
  int fd = a.Fd(0, "vcpuFd");
  uint64_t size = a.Size(1, "size", 1ULL << 30);
  if (!a.ok()) return a.env().Undefined();
  if (size < sizeof(kvm_run))
    return ThrowRange(a.env(), "mapRun: size must be at least sizeof(struct kvm_run) = " +
                                   std::to_string(sizeof(kvm_run)));
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return ThrowErrno(a.env(), "mmap", errno);
  {
    std::lock_guard<std::mutex> lock(Mu());
    Runs()[reinterpret_cast<uintptr_t>(p)] = size;
  }
  return Napi::ArrayBuffer::New(a.env(), p, size, RunFinalizer, reinterpret_cast<void*>(size));
}

Napi::Value RegisterVcpuThread(const Napi::CallbackInfo& info) {
  Args a(info, "registerVcpuThread");
  int fd = a.Fd(0, "vcpuFd");
  if (!a.ok()) return a.env().Undefined();
  Napi::Env env = a.env();
  void* data = nullptr;
  size_t len = 0;
  if (info.Length() < 2 || !BufferData(info[1], true, &data, &len))
    return ThrowType(env, "registerVcpuThread: run must be the ArrayBuffer returned by mapRun");
  std::lock_guard<std::mutex> lock(Mu());
  auto run = Runs().find(reinterpret_cast<uintptr_t>(data));
  if (run == Runs().end())
    return ThrowType(env, "registerVcpuThread: run must be the ArrayBuffer returned by mapRun");
  int idx = -1;
  for (int i = 0; i < kMaxSlots; i++)
    if (g_slots[i].handle.load() == 0) {
      idx = i;
      break;
    }
  if (idx < 0) return ThrowRange(env, "registerVcpuThread: too many registered vCPU threads");
  if (++g_generation >= (1u << (30 - kSlotBits))) g_generation = 1;  // handles stay below 2^30
  VcpuSlot& s = g_slots[idx];
  s.thread = pthread_self();
  s.run = static_cast<kvm_run*>(data);
  s.runSize = run->second;
  s.vcpuFd = fd;
  s.alive = true;
  s.pending.store(0);
  int h = static_cast<int>((g_generation << kSlotBits) | static_cast<uint32_t>(idx));
  t_guard.armed = true;
  SetThreadRun(s.run);
  s.handle.store(h);
  return Napi::Number::New(env, h);
}

Napi::Value UnregisterVcpuThread(const Napi::CallbackInfo& info) {
  Args a(info, "unregisterVcpuThread");
  int h = a.I32(0, "handle");
  if (!a.ok()) return a.env().Undefined();
  std::lock_guard<std::mutex> lock(Mu());
  VcpuSlot* s = Find(h);
  if (!s) return a.env().Undefined();
  if (pthread_equal(s->thread, pthread_self()) && __atomic_load_n(&t_run, __ATOMIC_RELAXED) == s->run)
    SetThreadRun(nullptr);
  FreeSlotLocked(s);
  return a.env().Undefined();
}

Napi::Value Kick(const Napi::CallbackInfo& info) {
  Args a(info, "kick");
  int h = a.I32(0, "handle");
  if (!a.ok()) return a.env().Undefined();
  std::lock_guard<std::mutex> lock(Mu());  // held across pthread_kill: the target cannot unregister meanwhile
  VcpuSlot* s = Find(h);
  return Napi::Boolean::New(a.env(), s != nullptr && KickLocked(s));
}

Napi::Value KickAll(const Napi::CallbackInfo& info) {
  int n = 0;
  {
    std::lock_guard<std::mutex> lock(Mu());
    for (VcpuSlot& s : g_slots)
      if (s.handle.load() != 0 && KickLocked(&s)) n++;
  }
  return Napi::Number::New(info.Env(), n);
}

Napi::Value Run(const Napi::CallbackInfo& info) {
  Args a(info, "run");
  int fd = a.Fd(0, "vcpuFd");
  int h = a.I32(1, "handle");
  VcpuSlot* s = OwnSlot(a, h);
  if (!a.ok()) return a.env().Undefined();
  if (ioctl(fd, KVM_RUN, 0) < 0) {
    int e = errno;
    if (e == EINTR || e == EAGAIN) {
      ClearKick(s);
      return Napi::Number::New(a.env(), -e);
    }
    return ThrowErrno(a.env(), "KVM_RUN", e);
  }
  return Napi::Number::New(a.env(), 0);
}

Napi::Value BenchRunPioLoop(const Napi::CallbackInfo& info) {
  Args a(info, "benchRunPioLoop");
  int fd = a.Fd(0, "vcpuFd");
  int h = a.I32(1, "handle");
  uint32_t port = a.U32(2, "port");
  uint64_t maxExits = a.Size(3, "maxExits", (1ULL << 53) - 1);
  VcpuSlot* s = OwnSlot(a, h);
  if (!a.ok()) return a.env().Undefined();
  kvm_run* run = s->run;
  uint64_t exits = 0;
  uint32_t reason = KVM_EXIT_IO;
  int result = 0;
  while (exits < maxExits) {
    if (ioctl(fd, KVM_RUN, 0) < 0) {
      int e = errno;
      if (e != EINTR && e != EAGAIN) return ThrowErrno(a.env(), "KVM_RUN", e);
      ClearKick(s);
      result = -e;
      reason = KVM_EXIT_INTR;  // an immediate_exit EINTR leaves run->exit_reason stale
      break;
    }
    reason = run->exit_reason;
    if (reason != KVM_EXIT_IO || run->io.port != port) break;
    if (run->io.direction == KVM_EXIT_IO_IN) {
      uint64_t n = static_cast<uint64_t>(run->io.size) * run->io.count;
      if (run->io.data_offset <= s->runSize && n <= s->runSize - run->io.data_offset)
        memset(reinterpret_cast<uint8_t*>(run) + run->io.data_offset, 0, n);
    }
    exits++;
  }
  Napi::Object r = Napi::Object::New(a.env());
  r.Set("exits", Napi::Number::New(a.env(), static_cast<double>(exits)));
  r.Set("exitReason", Napi::Number::New(a.env(), reason));
  r.Set("result", Napi::Number::New(a.env(), result));
  return r;
}

}  // namespace

void InitVcpu(Napi::Env env, Napi::Object exports) {
  InstallKickHandler();
  exports.Set("kickSignal", Napi::Number::New(env, SIGRTMIN));
  exports.Set("mapRun", Napi::Function::New(env, MapRun, "mapRun"));
  exports.Set("registerVcpuThread", Napi::Function::New(env, RegisterVcpuThread, "registerVcpuThread"));
  exports.Set("unregisterVcpuThread", Napi::Function::New(env, UnregisterVcpuThread, "unregisterVcpuThread"));
  exports.Set("kick", Napi::Function::New(env, Kick, "kick"));
  exports.Set("kickAll", Napi::Function::New(env, KickAll, "kickAll"));
  exports.Set("run", Napi::Function::New(env, Run, "run"));
  exports.Set("benchRunPioLoop", Napi::Function::New(env, BenchRunPioLoop, "benchRunPioLoop"));
}

}  // namespace kindling
