// The tap side of virtio-net's tap backend (src/devices/virtio/net/tap.ts): what JS cannot do with
// /dev/net/tun. No VMM policy here: which name, which offloads and what an error means to the user are
// decided in TypeScript.
//
//   tapOpen(name)            open("/dev/net/tun", O_RDWR|O_NONBLOCK|O_CLOEXEC), TUNSETIFF with
//                            IFF_TAP|IFF_NO_PI|IFF_VNET_HDR (creates the interface when it does not
//                            exist and the caller may: CAP_NET_ADMIN), then TUNSETVNETHDRSZ 12 (struct
//                            virtio_net_hdr_mrg_rxbuf: the header virtio 1.x always uses) and
//                            TUNSETOFFLOAD 0 (no offloads until the driver accepts some). Brings the link
//                            up (SIOCSIFFLAGS IFF_UP) when it is down and the caller may. Returns
//                            { fd, name, up }: the kernel's name, whether the link is up.
//                            Errors: EPERM (may not create or attach), EBUSY (another process holds a
//                            single-queue tap), EINVAL (the name is not a tap, or is bad), ENOENT
//                            (no /dev/net/tun).
//   tapSetOffload(fd, flags) TUNSETOFFLOAD: TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_UFO,
//                            the frames the kernel may hand us with a partial checksum or as GSO
//                            super-frames (what the driver's GUEST_* features accept).
// Frames themselves move with readvPacked/writevPacked (kindling.cc) straight on guest-RAM segments.
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

namespace kindling {

namespace {

using Napi::CallbackInfo;
using Napi::Value;

constexpr int kVnetHdrSize = 12;

// Bring `name` up if it is down; returns whether it is up afterwards (false when not permitted).
bool LinkUp(const char* name) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return false;
  ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  size_t n = strnlen(name, IFNAMSIZ - 1);
  memcpy(ifr.ifr_name, name, n);
  bool up = false;
  if (ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
    if (ifr.ifr_flags & IFF_UP) {
      up = true;
    } else {
      ifr.ifr_flags |= IFF_UP;
      up = ioctl(s, SIOCSIFFLAGS, &ifr) == 0;
    }
  }
  close(s);
  return up;
}

Value TapOpen(const CallbackInfo& info) {
  Args a(info, "tapOpen");
  std::string name = a.Str(0, "name");
  if (!a.ok()) return a.env().Undefined();
  Napi::Env env = a.env();
  if (name.empty() || name.size() >= IFNAMSIZ || name.find('\0') != std::string::npos) return ThrowErrno(env, "TUNSETIFF", EINVAL);
  int fd;
  do fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) return ThrowErrno(env, "open /dev/net/tun", errno);
  ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  memcpy(ifr.ifr_name, name.data(), name.size());
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  if (IoctlRetry(fd, TUNSETIFF, &ifr) < 0) {
    int e = errno;
    close(fd);
    return ThrowErrno(env, "TUNSETIFF", e);
  }
  int hdr = kVnetHdrSize;
  if (IoctlRetry(fd, TUNSETVNETHDRSZ, &hdr) < 0 || IoctlRetry(fd, TUNSETOFFLOAD, 0ul) < 0) {
    int e = errno;
    close(fd);
    return ThrowErrno(env, "TUNSETVNETHDRSZ", e);
  }
  char actual[IFNAMSIZ + 1];
  memcpy(actual, ifr.ifr_name, IFNAMSIZ);
  actual[IFNAMSIZ] = '\0';
  Napi::Object out = Napi::Object::New(env);
  out.Set("fd", Napi::Number::New(env, fd));
  out.Set("name", Napi::String::New(env, actual));
  out.Set("up", Napi::Boolean::New(env, LinkUp(actual)));
  return out;
}

Value TapSetOffload(const CallbackInfo& info) {
  Args a(info, "tapSetOffload");
  int fd = a.Fd(0, "fd");
  uint32_t flags = a.U32(1, "flags");
  if (!a.ok()) return a.env().Undefined();
  if (IoctlRetry(fd, TUNSETOFFLOAD, static_cast<unsigned long>(flags)) < 0) return ThrowErrno(a.env(), "TUNSETOFFLOAD", errno);
  return a.env().Undefined();
}

}  // namespace

void InitTap(Napi::Env env, Napi::Object exports) {
  exports.Set("tapOpen", Napi::Function::New(env, TapOpen, "tapOpen"));
  exports.Set("tapSetOffload", Napi::Function::New(env, TapSetOffload, "tapSetOffload"));
  Napi::Object c = Napi::Object::New(env);
  c.Set("TUNSETOFFLOAD", Napi::Number::New(env, static_cast<double>(TUNSETOFFLOAD)));
  c.Set("TUN_F_CSUM", Napi::Number::New(env, TUN_F_CSUM));
  c.Set("TUN_F_TSO4", Napi::Number::New(env, TUN_F_TSO4));
  c.Set("TUN_F_TSO6", Napi::Number::New(env, TUN_F_TSO6));
  c.Set("TUN_F_TSO_ECN", Napi::Number::New(env, TUN_F_TSO_ECN));
  c.Set("TUN_F_UFO", Napi::Number::New(env, TUN_F_UFO));
  exports.Set("tapConstants", c);
}

}  // namespace kindling
