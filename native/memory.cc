// Guest RAM as external SharedArrayBuffers over mmap, and the fd registry that keeps a mapping alive
// while a VM may still reach it.
//
// Lifetime: every mapping starts with one reference, owned by V8's backing store (released by the
// deleter, which runs once, on any thread, when the last isolate drops the buffer). Each VM that has
// the mapping in a memory slot holds one more. A VM's reference is released only when its VM fd and
// every vCPU fd created from it through createVcpu() have been closed through close()/closeVm(),
// because vCPU fds keep the kernel's VM (and its memory slots) alive. munmap happens at zero.
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include "kvm_headers.h"
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace kindling {

namespace {

struct Mapping {
  void* addr;
  size_t len;
  std::atomic<int> refs;  // modified only under Registry::mu; atomic for lock-free reads in diagnostics
};

struct VmEntry {
  int refs = 0;                   // open fds (VM fd + vCPU fds) that keep the kernel VM alive
  std::vector<Mapping*> maps;     // each holds one Mapping reference
};

struct Registry {
  std::mutex mu;
  std::map<uintptr_t, Mapping*> mappings;  // live guest-RAM mappings by base address
  std::unordered_map<int, VmEntry*> fds;   // VM fds and vCPU fds → their VM
};

// Never destroyed: the deleter may run on a V8 platform thread during process teardown.
Registry& Reg() {
  static Registry* r = new Registry;
  return *r;
}

// Under Reg().mu. Returns the mapping to munmap (after unlocking) when the last reference went away.
Mapping* DropMappingLocked(Mapping* m) {
  if (m->refs.fetch_sub(1) != 1) return nullptr;
  Reg().mappings.erase(reinterpret_cast<uintptr_t>(m->addr));
  return m;
}

// Under Reg().mu. Drops one fd reference of a VM entry; appends mappings that became free to `out`.
void DropEntryLocked(VmEntry* e, std::vector<Mapping*>* out) {
  if (--e->refs > 0) return;
  for (Mapping* m : e->maps)
    if (Mapping* dead = DropMappingLocked(m)) out->push_back(dead);
  delete e;
}

void Unmap(const std::vector<Mapping*>& dead) {
  for (Mapping* m : dead) {
    munmap(m->addr, m->len);
    delete m;
  }
}

// Under Reg().mu. Registers `fd` as a reference to `e` (dropping a stale entry for a reused fd number).
void BindFdLocked(int fd, VmEntry* e, std::vector<Mapping*>* dead) {
  auto it = Reg().fds.find(fd);
  if (it != Reg().fds.end()) {
    // The fd number was closed behind our back (not through close/closeVm) and reused.
    VmEntry* stale = it->second;
    Reg().fds.erase(it);
    DropEntryLocked(stale, dead);
  }
  e->refs++;
  Reg().fds.emplace(fd, e);
}

// Under Reg().mu. The entry for a VM fd, created (with the VM fd's reference) if unknown.
VmEntry* VmEntryLocked(int vmFd, std::vector<Mapping*>* dead) {
  auto it = Reg().fds.find(vmFd);
  if (it != Reg().fds.end()) return it->second;
  VmEntry* e = new VmEntry;
  BindFdLocked(vmFd, e, dead);
  return e;
}

void SabDeleter(void* /*data*/, size_t /*len*/, void* ctx) {
  Mapping* dead;
  {
    std::lock_guard<std::mutex> lock(Reg().mu);
    dead = DropMappingLocked(static_cast<Mapping*>(ctx));
  }
  if (dead) Unmap({dead});
}

// close() for any fd: releases the registry references of VM and vCPU fds. Returns 0 or errno.
int CloseFd(int fd) {
  VmEntry* e = nullptr;
  {
    std::lock_guard<std::mutex> lock(Reg().mu);
    auto it = Reg().fds.find(fd);
    if (it != Reg().fds.end()) {
      e = it->second;
      Reg().fds.erase(it);  // before close(): the number cannot be reused while it is still open
    }
  }
  int err = 0;
  if (close(fd) < 0 && errno != EINTR) err = errno;  // Linux: the fd is gone even on EINTR
  if (e) {
    std::vector<Mapping*> dead;
    {
      std::lock_guard<std::mutex> lock(Reg().mu);
      DropEntryLocked(e, &dead);
    }
    Unmap(dead);
  }
  return err;
}

// ---- JS functions ------------------------------------------------------------------------------

Napi::Value AllocGuestMemory(const Napi::CallbackInfo& info) {
  Args a(info, "allocGuestMemory");
  uint64_t size = a.Size(0, "size", 1ULL << 47);
  if (!a.ok()) return a.env().Undefined();
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  if (size == 0 || size % page != 0)
    return ThrowRange(a.env(), "allocGuestMemory: size must be a positive multiple of " + std::to_string(page));
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return ThrowErrno(a.env(), "mmap", errno);
  Mapping* m = new Mapping{p, static_cast<size_t>(size), {1}};
  {
    std::lock_guard<std::mutex> lock(Reg().mu);
    Reg().mappings.emplace(reinterpret_cast<uintptr_t>(p), m);
  }
  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  std::unique_ptr<v8::BackingStore> bs =
      v8::SharedArrayBuffer::NewBackingStore(p, static_cast<size_t>(size), SabDeleter, m);
  v8::Local<v8::SharedArrayBuffer> sab = v8::SharedArrayBuffer::New(isolate, std::move(bs));
  return Napi::Value(a.env(), ToNapi(sab));
}

Napi::Value BufferAddress(const Napi::CallbackInfo& info) {
  void* data = nullptr;
  size_t len = 0;
  if (info.Length() < 1 || !BufferData(info[0], true, &data, &len))
    return ThrowType(info.Env(), "bufferAddress: buf must be a SharedArrayBuffer or ArrayBuffer");
  return Napi::BigInt::New(info.Env(), static_cast<uint64_t>(reinterpret_cast<uintptr_t>(data)));
}

Napi::Value SetUserMemoryRegion(const Napi::CallbackInfo& info) {
  Args a(info, "setUserMemoryRegion");
  int vmFd = a.Fd(0, "vmFd");
  uint32_t slot = a.U32(1, "slot");
  uint32_t flags = a.U32(2, "flags");
  uint64_t gpa = a.U64(3, "guestPhysAddr");
  uint64_t offset = a.Size(5, "offset", (1ULL << 53) - 1);
  uint64_t size = a.Size(6, "size", (1ULL << 53) - 1);
  if (!a.ok()) return a.env().Undefined();
  Napi::Env env = a.env();

  kvm_userspace_memory_region r{};
  r.slot = slot;
  r.flags = flags;
  r.guest_phys_addr = gpa;
  r.memory_size = size;
  Mapping* m = nullptr;
  if (size > 0) {
    void* data = nullptr;
    size_t len = 0;
    if (!BufferData(info[4], false, &data, &len))
      return ThrowType(env, "setUserMemoryRegion: buf must be a SharedArrayBuffer");
    if (offset > len || size > len - offset)
      return ThrowRange(env, "setUserMemoryRegion: [offset, offset+size) is outside the buffer");
    {
      std::lock_guard<std::mutex> lock(Reg().mu);
      auto it = Reg().mappings.find(reinterpret_cast<uintptr_t>(data));
      if (it != Reg().mappings.end()) m = it->second;
    }
    if (!m) return ThrowType(env, "setUserMemoryRegion: buf was not allocated by allocGuestMemory");
    r.userspace_addr = reinterpret_cast<uintptr_t>(data) + offset;
  }
  if (IoctlRetry(vmFd, KVM_SET_USER_MEMORY_REGION, &r) < 0)
    return ThrowErrno(env, "KVM_SET_USER_MEMORY_REGION", errno);
  if (m) {
    // `buf` is alive on this call's stack, so the mapping's V8 reference cannot drop meanwhile.
    std::vector<Mapping*> dead;
    {
      std::lock_guard<std::mutex> lock(Reg().mu);
      VmEntry* e = VmEntryLocked(vmFd, &dead);
      if (std::find(e->maps.begin(), e->maps.end(), m) == e->maps.end()) {
        m->refs.fetch_add(1);
        e->maps.push_back(m);
      }
    }
    Unmap(dead);
  }
  return env.Undefined();
}

Napi::Value CreateVm(const Napi::CallbackInfo& info) {
  Args a(info, "createVm");
  int kvmFd = a.Fd(0, "kvmFd");
  uint32_t type = a.U32(1, "type");
  if (!a.ok()) return a.env().Undefined();
  int fd = IoctlRetry(kvmFd, KVM_CREATE_VM, static_cast<unsigned long>(type));
  if (fd < 0) return ThrowErrno(a.env(), "KVM_CREATE_VM", errno);
  std::vector<Mapping*> dead;
  {
    std::lock_guard<std::mutex> lock(Reg().mu);
    BindFdLocked(fd, new VmEntry, &dead);
  }
  Unmap(dead);
  return Napi::Number::New(a.env(), fd);
}

Napi::Value CreateVcpu(const Napi::CallbackInfo& info) {
  Args a(info, "createVcpu");
  int vmFd = a.Fd(0, "vmFd");
  uint32_t id = a.U32(1, "id");
  if (!a.ok()) return a.env().Undefined();
  int fd = IoctlRetry(vmFd, KVM_CREATE_VCPU, static_cast<unsigned long>(id));
  if (fd < 0) return ThrowErrno(a.env(), "KVM_CREATE_VCPU", errno);
  std::vector<Mapping*> dead;
  {
    std::lock_guard<std::mutex> lock(Reg().mu);
    VmEntry* e = VmEntryLocked(vmFd, &dead);
    BindFdLocked(fd, e, &dead);
  }
  Unmap(dead);
  return Napi::Number::New(a.env(), fd);
}

Napi::Value Close(const Napi::CallbackInfo& info) {
  Args a(info, "close");
  int fd = a.Fd(0, "fd");
  if (!a.ok()) return a.env().Undefined();
  ForgetWatchedFd(a.env(), fd);
  int err = CloseFd(fd);
  if (err) return ThrowErrno(a.env(), "close", err);
  return a.env().Undefined();
}

}  // namespace

void InitMemory(Napi::Env env, Napi::Object exports) {
  exports.Set("allocGuestMemory", Napi::Function::New(env, AllocGuestMemory, "allocGuestMemory"));
  exports.Set("bufferAddress", Napi::Function::New(env, BufferAddress, "bufferAddress"));
  exports.Set("setUserMemoryRegion", Napi::Function::New(env, SetUserMemoryRegion, "setUserMemoryRegion"));
  exports.Set("createVm", Napi::Function::New(env, CreateVm, "createVm"));
  exports.Set("createVcpu", Napi::Function::New(env, CreateVcpu, "createVcpu"));
  exports.Set("close", Napi::Function::New(env, Close, "close"));
  exports.Set("closeVm", Napi::Function::New(env, Close, "closeVm"));
}

}  // namespace kindling
