// kindling native addon: the syscalls and ioctls JavaScript cannot make. No VMM policy lives here:
// structs are raw bytes encoded/decoded in TypeScript (src/kvm/structs.ts); this file only checks
// their sizes. The surface is src/kvm/addon.ts.
//
//   common.cc  errors, argument parsing, V8 <-> Node-API handles
//   memory.cc  guest RAM (external SharedArrayBuffer over mmap), VM/vCPU fd lifetime, close()
//   vcpu.cc    kvm_run mapping, KVM_RUN, the SIGRTMIN kick
//   poll.cc    waking JS on fds: uv_poll watchers on the thread's loop, epoll
//   kindling.cc (this file) system/VM/vCPU ioctls, eventfd, positioned I/O, constants, init
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include "kvm_headers.h"
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstddef>
#include <memory>
#include <vector>

namespace kindling {

namespace {

using Napi::CallbackInfo;
using Napi::Env;
using Napi::Value;

Value Num(Env env, double v) { return Napi::Number::New(env, v); }

// ---- plain fds ---------------------------------------------------------------------------------

int OpenRetry(const char* path, int flags, mode_t mode) {
  int fd;
  do fd = open(path, flags, mode);
  while (fd < 0 && errno == EINTR);
  return fd;
}

Value Open(const CallbackInfo& info) {
  Args a(info, "open");
  std::string path = a.Str(0, "path");
  if (!a.ok()) return a.env().Undefined();
  int fd = OpenRetry(path.c_str(), O_RDWR | O_CLOEXEC, 0);
  if (fd < 0) return ThrowErrno(a.env(), "open", errno);
  return Num(a.env(), fd);
}

Value OpenFile(const CallbackInfo& info) {
  Args a(info, "openFile");
  std::string path = a.Str(0, "path");
  int flags = a.I32(1, "flags");
  uint32_t mode = a.U32(2, "mode");
  if (!a.ok()) return a.env().Undefined();
  int fd = OpenRetry(path.c_str(), flags | O_CLOEXEC, static_cast<mode_t>(mode));
  if (fd < 0) return ThrowErrno(a.env(), "open", errno);
  return Num(a.env(), fd);
}

// ---- system ioctls -----------------------------------------------------------------------------

Value SimpleIoctl(const CallbackInfo& info, const char* fn, const char* fdName, unsigned long req,
                  const char* name) {
  Args a(info, fn);
  int fd = a.Fd(0, fdName);
  if (!a.ok()) return a.env().Undefined();
  int r = IoctlRetry(fd, req, 0UL);
  if (r < 0) return ThrowErrno(a.env(), name, errno);
  return Num(a.env(), r);
}

Value GetApiVersion(const CallbackInfo& info) {
  return SimpleIoctl(info, "getApiVersion", "kvmFd", KVM_GET_API_VERSION, "KVM_GET_API_VERSION");
}

Value GetVcpuMmapSize(const CallbackInfo& info) {
  return SimpleIoctl(info, "getVcpuMmapSize", "kvmFd", KVM_GET_VCPU_MMAP_SIZE, "KVM_GET_VCPU_MMAP_SIZE");
}

Value CheckExtension(const CallbackInfo& info) {
  Args a(info, "checkExtension");
  int fd = a.Fd(0, "fd");
  uint32_t cap = a.U32(1, "cap");
  if (!a.ok()) return a.env().Undefined();
  int r = IoctlRetry(fd, KVM_CHECK_EXTENSION, static_cast<unsigned long>(cap));
  if (r < 0) return ThrowErrno(a.env(), "KVM_CHECK_EXTENSION", errno);
  return Num(a.env(), r);
}

Value GetSupportedCpuid(const CallbackInfo& info) {
  Args a(info, "getSupportedCpuid");
  int fd = a.Fd(0, "kvmFd");
  if (!a.ok()) return a.env().Undefined();
  static_assert(sizeof(kvm_cpuid_entry2) == 40, "kvm_cpuid_entry2 is 10 u32");
  for (uint32_t nent = 128;; nent *= 2) {
    size_t bytes = sizeof(kvm_cpuid2) + nent * sizeof(kvm_cpuid_entry2);
    std::unique_ptr<uint64_t[]> buf(new uint64_t[(bytes + 7) / 8]());
    auto* c = reinterpret_cast<kvm_cpuid2*>(buf.get());
    c->nent = nent;
    if (IoctlRetry(fd, KVM_GET_SUPPORTED_CPUID, c) < 0) {
      if (errno == E2BIG && nent < 65536) continue;
      return ThrowErrno(a.env(), "KVM_GET_SUPPORTED_CPUID", errno);
    }
    Napi::Uint32Array out = Napi::Uint32Array::New(a.env(), c->nent * 10);
    memcpy(out.Data(), c->entries, c->nent * sizeof(kvm_cpuid_entry2));
    return out;
  }
}

Value GetMsrIndexList(const CallbackInfo& info) {
  Args a(info, "getMsrIndexList");
  int fd = a.Fd(0, "kvmFd");
  if (!a.ok()) return a.env().Undefined();
  uint32_t n = 0;
  for (int attempt = 0; attempt < 8; attempt++) {
    std::unique_ptr<uint32_t[]> buf(new uint32_t[1 + n]());
    auto* l = reinterpret_cast<kvm_msr_list*>(buf.get());
    l->nmsrs = n;
    if (IoctlRetry(fd, KVM_GET_MSR_INDEX_LIST, l) < 0) {
      if (errno == E2BIG && l->nmsrs > n) {
        n = l->nmsrs;
        continue;
      }
      return ThrowErrno(a.env(), "KVM_GET_MSR_INDEX_LIST", errno);
    }
    Napi::Uint32Array out = Napi::Uint32Array::New(a.env(), l->nmsrs);
    memcpy(out.Data(), l->indices, l->nmsrs * sizeof(uint32_t));
    return out;
  }
  return ThrowErrno(a.env(), "KVM_GET_MSR_INDEX_LIST", E2BIG);
}

// ---- VM ioctls ---------------------------------------------------------------------------------

Value SetTssAddr(const CallbackInfo& info) {
  Args a(info, "setTssAddr");
  int fd = a.Fd(0, "vmFd");
  uint64_t addr = a.Size(1, "addr", UINT32_MAX);
  if (!a.ok()) return a.env().Undefined();
  if (IoctlRetry(fd, KVM_SET_TSS_ADDR, static_cast<unsigned long>(addr)) < 0)
    return ThrowErrno(a.env(), "KVM_SET_TSS_ADDR", errno);
  return a.env().Undefined();
}

Value SetIdentityMapAddr(const CallbackInfo& info) {
  Args a(info, "setIdentityMapAddr");
  int fd = a.Fd(0, "vmFd");
  uint64_t addr = a.U64(1, "addr");
  if (!a.ok()) return a.env().Undefined();
  if (IoctlRetry(fd, KVM_SET_IDENTITY_MAP_ADDR, &addr) < 0)
    return ThrowErrno(a.env(), "KVM_SET_IDENTITY_MAP_ADDR", errno);
  return a.env().Undefined();
}

Value CreateIrqchip(const CallbackInfo& info) {
  Args a(info, "createIrqchip");
  int fd = a.Fd(0, "vmFd");
  if (!a.ok()) return a.env().Undefined();
  if (IoctlRetry(fd, KVM_CREATE_IRQCHIP, 0UL) < 0) return ThrowErrno(a.env(), "KVM_CREATE_IRQCHIP", errno);
  return a.env().Undefined();
}

Value CreatePit2(const CallbackInfo& info) {
  Args a(info, "createPit2");
  int fd = a.Fd(0, "vmFd");
  uint32_t flags = a.U32(1, "flags");
  if (!a.ok()) return a.env().Undefined();
  kvm_pit_config c{};
  c.flags = flags;
  if (IoctlRetry(fd, KVM_CREATE_PIT2, &c) < 0) return ThrowErrno(a.env(), "KVM_CREATE_PIT2", errno);
  return a.env().Undefined();
}

Value IrqLine(const CallbackInfo& info) {
  Args a(info, "irqLine");
  int fd = a.Fd(0, "vmFd");
  uint32_t irq = a.U32(1, "irq");
  uint32_t level = a.U32(2, "level");
  if (!a.ok()) return a.env().Undefined();
  kvm_irq_level l{};
  l.irq = irq;
  l.level = level;
  if (IoctlRetry(fd, KVM_IRQ_LINE, &l) < 0) return ThrowErrno(a.env(), "KVM_IRQ_LINE", errno);
  return a.env().Undefined();
}

Value Irqfd(const CallbackInfo& info) {
  Args a(info, "irqfd");
  int vmFd = a.Fd(0, "vmFd");
  int efd = a.Fd(1, "fd");
  uint32_t gsi = a.U32(2, "gsi");
  uint32_t flags = a.U32(3, "flags");
  int resample = a.I32(4, "resampleFd");
  if (!a.ok()) return a.env().Undefined();
  kvm_irqfd f{};
  f.fd = static_cast<uint32_t>(efd);
  f.gsi = gsi;
  f.flags = flags;
  f.resamplefd = resample >= 0 ? static_cast<uint32_t>(resample) : 0;
  if (IoctlRetry(vmFd, KVM_IRQFD, &f) < 0) return ThrowErrno(a.env(), "KVM_IRQFD", errno);
  return a.env().Undefined();
}

Value Ioeventfd(const CallbackInfo& info) {
  Args a(info, "ioeventfd");
  int vmFd = a.Fd(0, "vmFd");
  uint64_t addr = a.U64(1, "addr");
  uint32_t len = a.U32(2, "len");
  int efd = a.Fd(3, "fd");
  uint32_t flags = a.U32(4, "flags");
  uint64_t datamatch = a.U64(5, "datamatch");
  if (!a.ok()) return a.env().Undefined();
  kvm_ioeventfd e{};
  e.datamatch = datamatch;
  e.addr = addr;
  e.len = len;
  e.fd = efd;
  e.flags = flags;
  if (IoctlRetry(vmFd, KVM_IOEVENTFD, &e) < 0) return ThrowErrno(a.env(), "KVM_IOEVENTFD", errno);
  return a.env().Undefined();
}

Value EnableCap(const CallbackInfo& info) {
  Args a(info, "enableCap");
  int fd = a.Fd(0, "fd");
  uint32_t cap = a.U32(1, "cap");
  if (!a.ok()) return a.env().Undefined();
  Env env = a.env();
  if (info.Length() < 3 || !info[2].IsArray()) return ThrowType(env, "enableCap: args must be an array of bigint");
  Napi::Array arr = info[2].As<Napi::Array>();
  if (arr.Length() > 4) return ThrowRange(env, "enableCap: at most 4 args");
  kvm_enable_cap c{};
  c.cap = cap;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value v = arr.Get(i);
    if (env.IsExceptionPending()) return env.Undefined();
    if (v.IsBigInt()) {
      bool lossless = false;
      c.args[i] = v.As<Napi::BigInt>().Uint64Value(&lossless);
      if (!lossless) return ThrowRange(env, "enableCap: args must fit in an unsigned 64-bit integer");
    } else if (v.IsNumber()) {
      double d = v.As<Napi::Number>().DoubleValue();
      if (!(d >= 0 && d <= 9007199254740991.0) || static_cast<double>(static_cast<uint64_t>(d)) != d)
        return ThrowRange(env, "enableCap: numeric args must be non-negative safe integers");
      c.args[i] = static_cast<uint64_t>(d);
    } else {
      return ThrowType(env, "enableCap: args must be an array of bigint");
    }
  }
  if (IoctlRetry(fd, KVM_ENABLE_CAP, &c) < 0) return ThrowErrno(env, "KVM_ENABLE_CAP", errno);
  return env.Undefined();
}

// ---- raw struct get/set ------------------------------------------------------------------------

template <typename T>
Value GetRaw(const CallbackInfo& info, const char* fn, const char* fdName, unsigned long req, const char* name) {
  Args a(info, fn);
  int fd = a.Fd(0, fdName);
  if (!a.ok()) return a.env().Undefined();
  T s;
  memset(&s, 0, sizeof s);
  if (IoctlRetry(fd, req, &s) < 0) return ThrowErrno(a.env(), name, errno);
  Napi::Uint8Array out = Napi::Uint8Array::New(a.env(), sizeof(T));
  memcpy(out.Data(), &s, sizeof s);
  return out;
}

template <typename T>
Value SetRaw(const CallbackInfo& info, const char* fn, const char* fdName, unsigned long req, const char* name) {
  Args a(info, fn);
  int fd = a.Fd(0, fdName);
  const uint8_t* p = a.Bytes(1, "data", sizeof(T));
  if (!a.ok()) return a.env().Undefined();
  T s;
  memcpy(&s, p, sizeof s);
  if (IoctlRetry(fd, req, &s) < 0) return ThrowErrno(a.env(), name, errno);
  return a.env().Undefined();
}

#define KINDLING_RAW(T, GetFn, SetFn, getName, setName, fdName, GETREQ, SETREQ) \
  Value GetFn(const CallbackInfo& info) { return GetRaw<T>(info, getName, fdName, GETREQ, #GETREQ); } \
  Value SetFn(const CallbackInfo& info) { return SetRaw<T>(info, setName, fdName, SETREQ, #SETREQ); }

KINDLING_RAW(kvm_regs, GetRegs, SetRegs, "getRegs", "setRegs", "vcpuFd", KVM_GET_REGS, KVM_SET_REGS)
KINDLING_RAW(kvm_sregs, GetSregs, SetSregs, "getSregs", "setSregs", "vcpuFd", KVM_GET_SREGS, KVM_SET_SREGS)
KINDLING_RAW(kvm_fpu, GetFpu, SetFpu, "getFpu", "setFpu", "vcpuFd", KVM_GET_FPU, KVM_SET_FPU)
KINDLING_RAW(kvm_lapic_state, GetLapic, SetLapic, "getLapic", "setLapic", "vcpuFd", KVM_GET_LAPIC, KVM_SET_LAPIC)
KINDLING_RAW(kvm_clock_data, GetClock, SetClock, "getClock", "setClock", "vmFd", KVM_GET_CLOCK, KVM_SET_CLOCK)

#undef KINDLING_RAW

Value GetMpState(const CallbackInfo& info) {
  Args a(info, "getMpState");
  int fd = a.Fd(0, "vcpuFd");
  if (!a.ok()) return a.env().Undefined();
  kvm_mp_state s{};
  if (IoctlRetry(fd, KVM_GET_MP_STATE, &s) < 0) return ThrowErrno(a.env(), "KVM_GET_MP_STATE", errno);
  return Num(a.env(), s.mp_state);
}

Value SetMpState(const CallbackInfo& info) {
  Args a(info, "setMpState");
  int fd = a.Fd(0, "vcpuFd");
  uint32_t state = a.U32(1, "state");
  if (!a.ok()) return a.env().Undefined();
  kvm_mp_state s{};
  s.mp_state = state;
  if (IoctlRetry(fd, KVM_SET_MP_STATE, &s) < 0) return ThrowErrno(a.env(), "KVM_SET_MP_STATE", errno);
  return a.env().Undefined();
}

Value SetCpuid2(const CallbackInfo& info) {
  Args a(info, "setCpuid2");
  int fd = a.Fd(0, "vcpuFd");
  size_t n = 0;
  const uint32_t* words = static_cast<const uint32_t*>(a.Typed(1, "entries", napi_uint32_array, "Uint32Array", &n));
  if (!a.ok()) return a.env().Undefined();
  if (n % 10 != 0) return ThrowRange(a.env(), "setCpuid2: entries length must be a multiple of 10 (kvm_cpuid_entry2)");
  size_t nent = n / 10;
  if (nent > 65536) return ThrowRange(a.env(), "setCpuid2: too many entries");
  size_t bytes = sizeof(kvm_cpuid2) + nent * sizeof(kvm_cpuid_entry2);
  std::unique_ptr<uint64_t[]> buf(new uint64_t[(bytes + 7) / 8]());
  auto* c = reinterpret_cast<kvm_cpuid2*>(buf.get());
  c->nent = static_cast<uint32_t>(nent);
  if (nent) memcpy(c->entries, words, nent * sizeof(kvm_cpuid_entry2));
  if (IoctlRetry(fd, KVM_SET_CPUID2, c) < 0) return ThrowErrno(a.env(), "KVM_SET_CPUID2", errno);
  return a.env().Undefined();
}

// Parses (vcpuFd, indices: Uint32Array, values: BigUint64Array) and builds a kvm_msrs.
struct MsrArgs {
  int fd = -1;
  size_t n = 0;
  uint64_t* values = nullptr;
  std::unique_ptr<uint64_t[]> buf;
  kvm_msrs* msrs = nullptr;
};

bool ParseMsrs(const CallbackInfo& info, const char* fn, MsrArgs* m) {
  Args a(info, fn);
  m->fd = a.Fd(0, "vcpuFd");
  size_t ni = 0, nv = 0;
  const uint32_t* idx = static_cast<const uint32_t*>(a.Typed(1, "indices", napi_uint32_array, "Uint32Array", &ni));
  m->values = static_cast<uint64_t*>(a.Typed(2, "values", napi_biguint64_array, "BigUint64Array", &nv));
  if (!a.ok()) return false;
  if (ni != nv) {
    ThrowRange(a.env(), std::string(fn) + ": indices and values must have the same length");
    return false;
  }
  if (ni > 4096) {
    ThrowRange(a.env(), std::string(fn) + ": too many MSRs");
    return false;
  }
  m->n = ni;
  size_t bytes = sizeof(kvm_msrs) + ni * sizeof(kvm_msr_entry);
  m->buf.reset(new uint64_t[(bytes + 7) / 8]());
  m->msrs = reinterpret_cast<kvm_msrs*>(m->buf.get());
  m->msrs->nmsrs = static_cast<uint32_t>(ni);
  for (size_t i = 0; i < ni; i++) {
    m->msrs->entries[i].index = idx[i];
    m->msrs->entries[i].data = m->values[i];
  }
  return true;
}

Value SetMsrs(const CallbackInfo& info) {
  MsrArgs m;
  if (!ParseMsrs(info, "setMsrs", &m)) return info.Env().Undefined();
  int r = IoctlRetry(m.fd, KVM_SET_MSRS, m.msrs);
  if (r < 0) return ThrowErrno(info.Env(), "KVM_SET_MSRS", errno);
  return Num(info.Env(), r);
}

Value GetMsrs(const CallbackInfo& info) {
  MsrArgs m;
  if (!ParseMsrs(info, "getMsrs", &m)) return info.Env().Undefined();
  int r = IoctlRetry(m.fd, KVM_GET_MSRS, m.msrs);
  if (r < 0) return ThrowErrno(info.Env(), "KVM_GET_MSRS", errno);
  for (int i = 0; i < r && static_cast<size_t>(i) < m.n; i++) m.values[i] = m.msrs->entries[i].data;
  return Num(info.Env(), r);
}

Value Translate(const CallbackInfo& info) {
  Args a(info, "translate");
  int fd = a.Fd(0, "vcpuFd");
  uint64_t linear = a.U64(1, "linear");
  if (!a.ok()) return a.env().Undefined();
  kvm_translation t{};
  t.linear_address = linear;
  if (IoctlRetry(fd, KVM_TRANSLATE, &t) < 0) return ThrowErrno(a.env(), "KVM_TRANSLATE", errno);
  Env env = a.env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("physical", Napi::BigInt::New(env, static_cast<uint64_t>(t.physical_address)));
  o.Set("valid", Napi::Boolean::New(env, t.valid != 0));
  o.Set("writeable", Napi::Boolean::New(env, t.writeable != 0));
  o.Set("usermode", Napi::Boolean::New(env, t.usermode != 0));
  return o;
}

// ---- eventfd -----------------------------------------------------------------------------------

Value Eventfd(const CallbackInfo& info) {
  Args a(info, "eventfd");
  uint32_t initval = a.U32(0, "initval");
  int flags = a.I32(1, "flags");
  if (!a.ok()) return a.env().Undefined();
  int fd = eventfd(initval, EFD_CLOEXEC | flags);
  if (fd < 0) return ThrowErrno(a.env(), "eventfd", errno);
  return Num(a.env(), fd);
}

Value EventfdWrite(const CallbackInfo& info) {
  Args a(info, "eventfdWrite");
  int fd = a.Fd(0, "fd");
  uint64_t v = a.U64(1, "value");
  if (!a.ok()) return a.env().Undefined();
  ssize_t r;
  do r = write(fd, &v, sizeof v);
  while (r < 0 && errno == EINTR);
  if (r < 0) return ThrowErrno(a.env(), "write", errno);
  return a.env().Undefined();
}

Value EventfdRead(const CallbackInfo& info) {
  Args a(info, "eventfdRead");
  int fd = a.Fd(0, "fd");
  if (!a.ok()) return a.env().Undefined();
  uint64_t v = 0;
  ssize_t r = read(fd, &v, sizeof v);
  if (r < 0) {
    // EAGAIN: non-blocking and not ready. EINTR: a signal (e.g. a kick) interrupted a blocking read;
    // return to JS instead of retrying so the caller can look at its control words.
    if (errno == EAGAIN || errno == EINTR) return Napi::BigInt::New(a.env(), static_cast<uint64_t>(0));
    return ThrowErrno(a.env(), "read", errno);
  }
  if (r != sizeof v) return ThrowErrno(a.env(), "read", EIO);
  return Napi::BigInt::New(a.env(), v);
}

// ---- positioned I/O ----------------------------------------------------------------------------

Value VectorIo(const CallbackInfo& info, bool write) {
  const char* fn = write ? "pwritev" : "preadv";
  Args a(info, fn);
  int fd = a.Fd(0, "fd");
  uint64_t pos = a.U64(2, "position");
  if (!a.ok()) return a.env().Undefined();
  Env env = a.env();
  if (pos > static_cast<uint64_t>(INT64_MAX)) return ThrowRange(env, std::string(fn) + ": position is too large");
  if (info.Length() < 2 || !info[1].IsArray()) return ThrowType(env, std::string(fn) + ": iov must be an array");
  Napi::Array iov = info[1].As<Napi::Array>();
  uint32_t n = iov.Length();
  if (n > IOV_MAX) return ThrowRange(env, std::string(fn) + ": iov has more than IOV_MAX (" + std::to_string(IOV_MAX) + ") entries");

  // Pass 1 reads the JS values (element access may run user getters); pass 2 takes data pointers,
  // so no JS runs between validating a pointer and using it.
  struct Entry {
    napi_value buf;
    double off, len;
  };
  std::vector<Entry> entries(n);
  // The element's name for an error message, built only when there is an error (building it for
  // every entry cost more than the system call for a 254-segment request).
  auto where = [fn](uint32_t i) { return std::string(fn) + ": iov[" + std::to_string(i) + "]"; };
  for (uint32_t i = 0; i < n; i++) {
    Napi::Value e = iov.Get(i);
    if (env.IsExceptionPending()) return env.Undefined();
    if (!e.IsArray() || e.As<Napi::Array>().Length() < 3)
      return ThrowType(env, where(i) + " must be [SharedArrayBuffer, offset, length]");
    Napi::Array t = e.As<Napi::Array>();
    Napi::Value b = t.Get(0u), o = t.Get(1u), l = t.Get(2u);
    if (env.IsExceptionPending()) return env.Undefined();
    if (!o.IsNumber() || !l.IsNumber()) return ThrowType(env, where(i) + ": offset and length must be numbers");
    entries[i] = {b, o.As<Napi::Number>().DoubleValue(), l.As<Napi::Number>().DoubleValue()};
  }
  std::vector<iovec> vec(n);
  for (uint32_t i = 0; i < n; i++) {
    void* data = nullptr;
    size_t blen = 0;
    if (!BufferData(entries[i].buf, true, &data, &blen))
      return ThrowType(env, where(i) + "[0] must be a SharedArrayBuffer");
    double off = entries[i].off, len = entries[i].len;
    if (!(off >= 0) || !(len >= 0) || off != static_cast<double>(static_cast<uint64_t>(off)) ||
        len != static_cast<double>(static_cast<uint64_t>(len)))
      return ThrowRange(env, where(i) + ": offset and length must be non-negative integers");
    uint64_t uo = static_cast<uint64_t>(off), ul = static_cast<uint64_t>(len);
    if (uo > blen || ul > blen - uo)
      return ThrowRange(env, where(i) + ": [offset, offset+length) is outside the buffer (byteLength " +
                                 std::to_string(blen) + ")");
    vec[i].iov_base = static_cast<uint8_t*>(data) + uo;
    vec[i].iov_len = ul;
  }
  ssize_t r;
  do r = write ? pwritev(fd, vec.data(), static_cast<int>(n), static_cast<off_t>(pos))
               : preadv(fd, vec.data(), static_cast<int>(n), static_cast<off_t>(pos));
  while (r < 0 && errno == EINTR);
  if (r < 0) return ThrowErrno(env, fn, errno);
  return Num(env, static_cast<double>(r));
}

// preadvPacked / pwritevPacked(fd, buffers, iov, count, position): the same system calls with the
// iovec described without a JS object per entry: `buffers` is an array of SharedArrayBuffers (at most
// 64; a request's segments usually all lie in one or two guest-RAM slots), `iov` a Float64Array of
// `count` triples (buffer index, offset, length). For a 254-segment block request this is what
// separates the call from the copy it does: building and reading a [buffer, offset, length] array per
// segment cost more than the kernel's work. Same checks as preadv: every segment inside its buffer.
//
// readvPacked / writevPacked(fd, buffers, iov, count): the same without a position (readv/writev on a
// tap, a socket or a pipe, for virtio-net's frames), and a non-blocking fd that is not ready returns -1
// (EAGAIN) instead of throwing.
// The buffers of a packed call, resolved once: data pointer and length of each SharedArrayBuffer.
struct PackedBuffers {
  void* data[64];
  size_t len[64];
  uint32_t n = 0;
};

// buffers (arg `bi`) → pb; false with a JS exception pending.
static bool ResolvePackedBuffers(const CallbackInfo& info, size_t bi, const char* fn, PackedBuffers* pb) {
  Env env = info.Env();
  if (!info[bi].IsArray()) {
    ThrowType(env, std::string(fn) + ": buffers must be an array of SharedArrayBuffers");
    return false;
  }
  Napi::Array bufs = info[bi].As<Napi::Array>();
  uint32_t nb = bufs.Length();
  if (nb > 64) {
    ThrowRange(env, std::string(fn) + ": more than 64 buffers");
    return false;
  }
  napi_value bv[64];
  for (uint32_t i = 0; i < nb; i++) {
    Napi::Value b = bufs.Get(i);
    if (env.IsExceptionPending()) return false;
    bv[i] = b;
  }
  // No JS runs after this: the data pointers stay valid for the call.
  for (uint32_t i = 0; i < nb; i++)
    if (!BufferData(bv[i], false, &pb->data[i], &pb->len[i])) {
      ThrowType(env, std::string(fn) + ": buffers[" + std::to_string(i) + "] must be a SharedArrayBuffer");
      return false;
    }
  pb->n = nb;
  return true;
}

// `count` (buffer index, offset, length) triples from t[3*first…] → out; every segment inside its
// buffer. false with a JS exception pending.
static bool FillPackedIov(Env env, const char* fn, const PackedBuffers& pb, const double* t, uint32_t first, uint32_t count, iovec* out) {
  for (uint32_t j = 0; j < count; j++) {
    uint32_t i = first + j;
    double bi = t[3 * i], off = t[3 * i + 1], len = t[3 * i + 2];
    if (!(bi >= 0) || bi >= pb.n || bi != static_cast<double>(static_cast<uint32_t>(bi))) {
      ThrowRange(env, std::string(fn) + ": iov[" + std::to_string(i) + "]: no such buffer");
      return false;
    }
    if (!(off >= 0) || !(len >= 0) || off != static_cast<double>(static_cast<uint64_t>(off)) ||
        len != static_cast<double>(static_cast<uint64_t>(len))) {
      ThrowRange(env, std::string(fn) + ": iov[" + std::to_string(i) + "]: offset and length must be non-negative integers");
      return false;
    }
    uint32_t b = static_cast<uint32_t>(bi);
    uint64_t uo = static_cast<uint64_t>(off), ul = static_cast<uint64_t>(len);
    if (uo > pb.len[b] || ul > pb.len[b] - uo) {
      ThrowRange(env, std::string(fn) + ": iov[" + std::to_string(i) + "]: [offset, offset+length) is outside buffer " +
                          std::to_string(b) + " (byteLength " + std::to_string(pb.len[b]) + ")");
      return false;
    }
    out[j].iov_base = static_cast<uint8_t*>(pb.data[b]) + uo;
    out[j].iov_len = ul;
  }
  return true;
}

Value PackedVectorIo(const CallbackInfo& info, bool write, bool positioned) {
  const char* fn = positioned ? (write ? "pwritevPacked" : "preadvPacked") : (write ? "writevPacked" : "readvPacked");
  Args a(info, fn);
  int fd = a.Fd(0, "fd");
  uint32_t count = a.U32(3, "count");
  uint64_t pos = positioned ? a.U64(4, "position") : 0;
  if (!a.ok()) return a.env().Undefined();
  Env env = a.env();
  if (pos > static_cast<uint64_t>(INT64_MAX)) return ThrowRange(env, std::string(fn) + ": position is too large");
  if (count > IOV_MAX) return ThrowRange(env, std::string(fn) + ": count is more than IOV_MAX (" + std::to_string(IOV_MAX) + ")");
  PackedBuffers pb;
  if (!ResolvePackedBuffers(info, 1, fn, &pb)) return env.Undefined();
  if (!info[2].IsTypedArray() || info[2].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array)
    return ThrowType(env, std::string(fn) + ": iov must be a Float64Array");
  Napi::Float64Array iov = info[2].As<Napi::Float64Array>();
  if (iov.ElementLength() < static_cast<size_t>(count) * 3)
    return ThrowRange(env, std::string(fn) + ": iov holds fewer than count triples");
  // A frame or a small request fits the stack array: no allocation per call on the hot path.
  iovec stackv[64];
  std::vector<iovec> heapv;
  iovec* vec = stackv;
  if (count > 64) {
    heapv.resize(count);
    vec = heapv.data();
  }
  if (!FillPackedIov(env, fn, pb, iov.Data(), 0, count, vec)) return env.Undefined();
  ssize_t r;
  if (positioned) {
    do r = write ? pwritev(fd, vec, static_cast<int>(count), static_cast<off_t>(pos))
                 : preadv(fd, vec, static_cast<int>(count), static_cast<off_t>(pos));
    while (r < 0 && errno == EINTR);
  } else {
    do r = write ? writev(fd, vec, static_cast<int>(count)) : readv(fd, vec, static_cast<int>(count));
    while (r < 0 && errno == EINTR);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return Num(env, -1);
  }
  if (r < 0) return ThrowErrno(env, fn, errno);
  return Num(env, static_cast<double>(r));
}

// readvBatch(fd, buffers, iov, counts, n, lengths): up to `n` readv calls on a non-blocking,
// message-preserving fd (a tap: one frame per read), the i-th into the counts[i] triples that follow
// the previous sets in `iov` (packed as for readvPacked); lengths[i] gets the bytes of read i, or 0 when
// that read failed (the frame was refused and is gone). Stops at the first EAGAIN or end of file (not
// counted). Returns how many reads were made. One call per wake-up instead of one per frame, for
// virtio-net's receive path.
Value ReadvBatch(const CallbackInfo& info) {
  const char* fn = "readvBatch";
  Args a(info, fn);
  int fd = a.Fd(0, "fd");
  uint32_t n = a.U32(4, "n");
  if (!a.ok()) return a.env().Undefined();
  Env env = a.env();
  PackedBuffers pb;
  if (!ResolvePackedBuffers(info, 1, fn, &pb)) return env.Undefined();
  if (!info[2].IsTypedArray() || info[2].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array)
    return ThrowType(env, std::string(fn) + ": iov must be a Float64Array");
  if (!info[3].IsTypedArray() || info[3].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array)
    return ThrowType(env, std::string(fn) + ": counts must be a Uint32Array");
  if (!info[5].IsTypedArray() || info[5].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array)
    return ThrowType(env, std::string(fn) + ": lengths must be a Float64Array");
  Napi::Float64Array iov = info[2].As<Napi::Float64Array>();
  Napi::Uint32Array counts = info[3].As<Napi::Uint32Array>();
  Napi::Float64Array lengths = info[5].As<Napi::Float64Array>();
  if (counts.ElementLength() < n || lengths.ElementLength() < n) return ThrowRange(env, std::string(fn) + ": counts and lengths must hold n entries");
  const uint32_t* c = counts.Data();
  uint64_t triples = 0;
  for (uint32_t i = 0; i < n; i++) {
    if (c[i] > 64) return ThrowRange(env, std::string(fn) + ": counts[" + std::to_string(i) + "] is more than 64");
    triples += c[i];
  }
  if (iov.ElementLength() < triples * 3) return ThrowRange(env, std::string(fn) + ": iov holds fewer triples than counts add up to");
  const double* t = iov.Data();
  double* out = lengths.Data();
  iovec vec[64];
  uint32_t first = 0, done = 0;
  for (uint32_t i = 0; i < n; i++) {
    if (!FillPackedIov(env, fn, pb, t, first, c[i], vec)) return env.Undefined();
    first += c[i];
    ssize_t r;
    do r = readv(fd, vec, static_cast<int>(c[i]));
    while (r < 0 && errno == EINTR);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (r == 0) break;
    // Any other error is the frame's (a tap drops a frame longer than the buffers with EFAULT): it is
    // gone, the set is unused (length 0), and the batch goes on.
    out[i] = r < 0 ? 0 : static_cast<double>(r);
    done++;
  }
  return Num(env, static_cast<double>(done));
}

Value PreadvPacked(const CallbackInfo& info) { return PackedVectorIo(info, false, true); }
Value PwritevPacked(const CallbackInfo& info) { return PackedVectorIo(info, true, true); }
Value ReadvPacked(const CallbackInfo& info) { return PackedVectorIo(info, false, false); }
Value WritevPacked(const CallbackInfo& info) { return PackedVectorIo(info, true, false); }

Value Preadv(const CallbackInfo& info) { return VectorIo(info, false); }
Value Pwritev(const CallbackInfo& info) { return VectorIo(info, true); }

Value Fdatasync(const CallbackInfo& info) {
  Args a(info, "fdatasync");
  int fd = a.Fd(0, "fd");
  if (!a.ok()) return a.env().Undefined();
  int r;
  do r = fdatasync(fd);
  while (r < 0 && errno == EINTR);
  if (r < 0) return ThrowErrno(a.env(), "fdatasync", errno);
  return a.env().Undefined();
}

Value TryLockExclusive(const CallbackInfo& info) {
  Args a(info, "tryLockExclusive");
  int fd = a.Fd(0, "fd");
  if (!a.ok()) return a.env().Undefined();
  int r;
  do r = flock(fd, LOCK_EX | LOCK_NB);
  while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno == EWOULDBLOCK) return Napi::Boolean::New(a.env(), false);
    return ThrowErrno(a.env(), "flock", errno);
  }
  return Napi::Boolean::New(a.env(), true);
}

Value FileSize(const CallbackInfo& info) {
  Args a(info, "fileSize");
  int fd = a.Fd(0, "fd");
  if (!a.ok()) return a.env().Undefined();
  struct stat st;
  if (fstat(fd, &st) < 0) return ThrowErrno(a.env(), "fstat", errno);
  uint64_t size = static_cast<uint64_t>(st.st_size);
  if (S_ISBLK(st.st_mode) && IoctlRetry(fd, BLKGETSIZE64, &size) < 0)
    return ThrowErrno(a.env(), "BLKGETSIZE64", errno);
  return Napi::BigInt::New(a.env(), size);
}

Value Fallocate(const CallbackInfo& info) {
  Args a(info, "fallocate");
  int fd = a.Fd(0, "fd");
  int mode = a.I32(1, "mode");
  int64_t off = a.I64(2, "offset");
  int64_t len = a.I64(3, "len");
  if (!a.ok()) return a.env().Undefined();
  int r;
  do r = fallocate(fd, mode, off, len);
  while (r < 0 && errno == EINTR);
  if (r < 0) return ThrowErrno(a.env(), "fallocate", errno);
  return a.env().Undefined();
}

Value Gettid(const CallbackInfo& info) { return Num(info.Env(), gettid()); }

// ---- structSizes and constants -----------------------------------------------------------------

Napi::Object StructSizes(Env env) {
  Napi::Object o = Napi::Object::New(env);
  auto set = [&](const char* k, size_t v) { o.Set(k, Napi::Number::New(env, static_cast<double>(v))); };
#define SZ(T) set("sizeof." #T, sizeof(T))
  SZ(kvm_regs);
  SZ(kvm_sregs);
  SZ(kvm_fpu);
  SZ(kvm_lapic_state);
  SZ(kvm_cpuid_entry2);
  SZ(kvm_msr_entry);
  SZ(kvm_run);
  SZ(kvm_clock_data);
  SZ(kvm_segment);
  SZ(kvm_dtable);
  SZ(kvm_userspace_memory_region);
  SZ(kvm_irqfd);
  SZ(kvm_ioeventfd);
  SZ(kvm_pit_config);
  SZ(kvm_enable_cap);
  SZ(kvm_translation);
  SZ(kvm_mp_state);
  SZ(kvm_cpuid2);
  SZ(kvm_msrs);
  SZ(kvm_msr_list);
#undef SZ
#define OF(T, f) set(#T "." #f, offsetof(T, f))
  OF(kvm_run, request_interrupt_window);
  OF(kvm_run, immediate_exit);
  OF(kvm_run, exit_reason);
  OF(kvm_run, ready_for_interrupt_injection);
  OF(kvm_run, if_flag);
  OF(kvm_run, flags);
  OF(kvm_run, cr8);
  OF(kvm_run, apic_base);
  OF(kvm_run, io);
  OF(kvm_run, io.direction);
  OF(kvm_run, io.size);
  OF(kvm_run, io.port);
  OF(kvm_run, io.count);
  OF(kvm_run, io.data_offset);
  OF(kvm_run, mmio);
  OF(kvm_run, mmio.phys_addr);
  OF(kvm_run, mmio.data);
  OF(kvm_run, mmio.len);
  OF(kvm_run, mmio.is_write);
  OF(kvm_run, internal.suberror);
  OF(kvm_run, internal.ndata);
  OF(kvm_run, internal.data);
  OF(kvm_run, system_event.type);
  OF(kvm_run, system_event.ndata);
  OF(kvm_run, system_event.data);
  OF(kvm_run, fail_entry.hardware_entry_failure_reason);
  OF(kvm_run, fail_entry.cpu);
  OF(kvm_run, hw.hardware_exit_reason);
  OF(kvm_run, ex.exception);
  OF(kvm_run, ex.error_code);
  OF(kvm_regs, rip);
  OF(kvm_regs, rflags);
  OF(kvm_sregs, cs);
  OF(kvm_sregs, ds);
  OF(kvm_sregs, es);
  OF(kvm_sregs, fs);
  OF(kvm_sregs, gs);
  OF(kvm_sregs, ss);
  OF(kvm_sregs, tr);
  OF(kvm_sregs, ldt);
  OF(kvm_sregs, gdt);
  OF(kvm_sregs, idt);
  OF(kvm_sregs, cr0);
  OF(kvm_sregs, cr2);
  OF(kvm_sregs, cr3);
  OF(kvm_sregs, cr4);
  OF(kvm_sregs, cr8);
  OF(kvm_sregs, efer);
  OF(kvm_sregs, apic_base);
  OF(kvm_sregs, interrupt_bitmap);
  OF(kvm_segment, base);
  OF(kvm_segment, limit);
  OF(kvm_segment, selector);
  OF(kvm_segment, type);
  OF(kvm_segment, present);
  OF(kvm_segment, dpl);
  OF(kvm_segment, db);
  OF(kvm_segment, s);
  OF(kvm_segment, l);
  OF(kvm_segment, g);
  OF(kvm_segment, avl);
  OF(kvm_segment, unusable);
  OF(kvm_fpu, fcw);
  OF(kvm_fpu, xmm);
  OF(kvm_fpu, mxcsr);
  OF(kvm_clock_data, clock);
  OF(kvm_clock_data, flags);
  OF(kvm_clock_data, realtime);
  OF(kvm_clock_data, host_tsc);
#undef OF
  o.Freeze();
  return o;
}

Napi::Object Constants(Env env) {
  Napi::Object o = Napi::Object::New(env);
  auto set = [&](const char* k, double v) { o.Set(k, Napi::Number::New(env, v)); };
#define C(x) set(#x, static_cast<double>(x))
  // open(2), eventfd(2), fallocate(2), uio
  C(O_RDONLY); C(O_WRONLY); C(O_RDWR); C(O_CREAT); C(O_EXCL); C(O_TRUNC); C(O_CLOEXEC); C(O_DIRECT);
  C(O_SYNC); C(O_DSYNC); C(O_NONBLOCK);
  C(EFD_NONBLOCK); C(EFD_SEMAPHORE); C(EFD_CLOEXEC);
  C(FALLOC_FL_KEEP_SIZE); C(FALLOC_FL_PUNCH_HOLE); C(FALLOC_FL_ZERO_RANGE);
  C(IOV_MAX);
  C(EINTR); C(EAGAIN);
  set("PAGE_SIZE", static_cast<double>(sysconf(_SC_PAGESIZE)));
  C(KVM_API_VERSION);
  // capabilities
  C(KVM_CAP_IRQCHIP); C(KVM_CAP_HLT); C(KVM_CAP_USER_MEMORY); C(KVM_CAP_SET_TSS_ADDR);
  C(KVM_CAP_EXT_CPUID); C(KVM_CAP_PIT2); C(KVM_CAP_IOEVENTFD); C(KVM_CAP_IRQFD); C(KVM_CAP_MAX_VCPUS);
  C(KVM_CAP_NR_VCPUS); C(KVM_CAP_MAX_VCPU_ID); C(KVM_CAP_IMMEDIATE_EXIT); C(KVM_CAP_ADJUST_CLOCK);
  C(KVM_CAP_X86_DISABLE_EXITS); C(KVM_CAP_TSC_DEADLINE_TIMER); C(KVM_CAP_SPLIT_IRQCHIP);
  C(KVM_CAP_EXIT_ON_EMULATION_FAILURE); C(KVM_CAP_SET_IDENTITY_MAP_ADDR); C(KVM_CAP_MP_STATE);
  C(KVM_CAP_IRQ_ROUTING); C(KVM_CAP_PIT_STATE2); C(KVM_CAP_XSAVE); C(KVM_CAP_XCRS);
  C(KVM_CAP_VCPU_EVENTS); C(KVM_CAP_TSC_CONTROL); C(KVM_CAP_GET_TSC_KHZ); C(KVM_CAP_KVMCLOCK_CTRL);
  C(KVM_CAP_X2APIC_API); C(KVM_CAP_INTERNAL_ERROR_DATA); C(KVM_CAP_IOEVENTFD_ANY_LENGTH);
  C(KVM_CAP_NOP_IO_DELAY); C(KVM_CAP_SYNC_MMU); C(KVM_CAP_READONLY_MEM); C(KVM_CAP_NR_MEMSLOTS);
  // flags
  C(KVM_MEM_LOG_DIRTY_PAGES); C(KVM_MEM_READONLY);
  C(KVM_IRQFD_FLAG_DEASSIGN); C(KVM_IRQFD_FLAG_RESAMPLE);
  C(KVM_IOEVENTFD_FLAG_DATAMATCH); C(KVM_IOEVENTFD_FLAG_PIO); C(KVM_IOEVENTFD_FLAG_DEASSIGN);
  C(KVM_PIT_SPEAKER_DUMMY);
  C(KVM_X86_DISABLE_EXITS_MWAIT); C(KVM_X86_DISABLE_EXITS_HLT); C(KVM_X86_DISABLE_EXITS_PAUSE);
  C(KVM_X86_DISABLE_EXITS_CSTATE);
  C(KVM_CLOCK_TSC_STABLE); C(KVM_CLOCK_REALTIME); C(KVM_CLOCK_HOST_TSC);
  // exits
  C(KVM_EXIT_UNKNOWN); C(KVM_EXIT_EXCEPTION); C(KVM_EXIT_IO); C(KVM_EXIT_HYPERCALL); C(KVM_EXIT_DEBUG);
  C(KVM_EXIT_HLT); C(KVM_EXIT_MMIO); C(KVM_EXIT_IRQ_WINDOW_OPEN); C(KVM_EXIT_SHUTDOWN);
  C(KVM_EXIT_FAIL_ENTRY); C(KVM_EXIT_INTR); C(KVM_EXIT_SET_TPR); C(KVM_EXIT_TPR_ACCESS); C(KVM_EXIT_NMI);
  C(KVM_EXIT_INTERNAL_ERROR); C(KVM_EXIT_WATCHDOG); C(KVM_EXIT_SYSTEM_EVENT); C(KVM_EXIT_IOAPIC_EOI);
  C(KVM_EXIT_HYPERV); C(KVM_EXIT_X86_RDMSR); C(KVM_EXIT_X86_WRMSR); C(KVM_EXIT_DIRTY_RING_FULL);
  C(KVM_EXIT_AP_RESET_HOLD); C(KVM_EXIT_X86_BUS_LOCK); C(KVM_EXIT_NOTIFY);
  C(KVM_EXIT_IO_IN); C(KVM_EXIT_IO_OUT);
  C(KVM_SYSTEM_EVENT_SHUTDOWN); C(KVM_SYSTEM_EVENT_RESET); C(KVM_SYSTEM_EVENT_CRASH);
  C(KVM_SYSTEM_EVENT_WAKEUP); C(KVM_SYSTEM_EVENT_SUSPEND); C(KVM_SYSTEM_EVENT_SEV_TERM);
  C(KVM_INTERNAL_ERROR_EMULATION); C(KVM_INTERNAL_ERROR_SIMUL_EX); C(KVM_INTERNAL_ERROR_DELIVERY_EV);
  C(KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON);
  C(KVM_MP_STATE_RUNNABLE); C(KVM_MP_STATE_UNINITIALIZED); C(KVM_MP_STATE_INIT_RECEIVED);
  C(KVM_MP_STATE_HALTED); C(KVM_MP_STATE_SIPI_RECEIVED); C(KVM_MP_STATE_AP_RESET_HOLD);
  C(KVM_MP_STATE_SUSPENDED);
#undef C
  o.Freeze();
  return o;
}

Napi::Object Init(Env env, Napi::Object exports) {
  InitMemory(env, exports);
  InitVcpu(env, exports);
  InitPoll(env, exports);
  InitVsock(env, exports);
  InitLock(env, exports);
  InitTty(env, exports);  // tty.cc: getpgrp, tcgetpgrp, SIGTTOU/SIGTTIN ignored
  InitVhostUser(env, exports);  // vhost-user.cc: SCM_RIGHTS sockets, fd-region mmap
  InitSeccomp(env, exports);  // seccomp.cc: per-thread syscall filters (src/seccomp/)
  InitTap(env, exports);  // tap.cc: /dev/net/tun for virtio-net's tap backend
  exports.Set("structSizes", StructSizes(env));
  exports.Set("constants", Constants(env));
  struct Fn {
    const char* name;
    Value (*fn)(const CallbackInfo&);
  };
  static const Fn fns[] = {
      {"open", Open},
      {"openFile", OpenFile},
      {"getApiVersion", GetApiVersion},
      {"checkExtension", CheckExtension},
      {"getVcpuMmapSize", GetVcpuMmapSize},
      {"getSupportedCpuid", GetSupportedCpuid},
      {"getMsrIndexList", GetMsrIndexList},
      {"setTssAddr", SetTssAddr},
      {"setIdentityMapAddr", SetIdentityMapAddr},
      {"createIrqchip", CreateIrqchip},
      {"createPit2", CreatePit2},
      {"irqLine", IrqLine},
      {"irqfd", Irqfd},
      {"ioeventfd", Ioeventfd},
      {"getClock", GetClock},
      {"setClock", SetClock},
      {"enableCap", EnableCap},
      {"getRegs", GetRegs},
      {"setRegs", SetRegs},
      {"getSregs", GetSregs},
      {"setSregs", SetSregs},
      {"getFpu", GetFpu},
      {"setFpu", SetFpu},
      {"getLapic", GetLapic},
      {"setLapic", SetLapic},
      {"getMpState", GetMpState},
      {"setMpState", SetMpState},
      {"setCpuid2", SetCpuid2},
      {"setMsrs", SetMsrs},
      {"getMsrs", GetMsrs},
      {"translate", Translate},
      {"eventfd", Eventfd},
      {"eventfdWrite", EventfdWrite},
      {"eventfdRead", EventfdRead},
      {"preadv", Preadv},
      {"preadvPacked", PreadvPacked},
      {"pwritevPacked", PwritevPacked},
      {"readvPacked", ReadvPacked},
      {"readvBatch", ReadvBatch},
      {"writevPacked", WritevPacked},
      {"pwritev", Pwritev},
      {"fdatasync", Fdatasync},
      {"tryLockExclusive", TryLockExclusive},
      {"fileSize", FileSize},
      {"fallocate", Fallocate},
      {"gettid", Gettid},
  };
  for (const Fn& f : fns) exports.Set(f.name, Napi::Function::New(env, f.fn, f.name));
  return exports;
}

}  // namespace

}  // namespace kindling

static Napi::Object InitKindling(Napi::Env env, Napi::Object exports) { return kindling::Init(env, exports); }

NODE_API_MODULE(kindling, InitKindling)
