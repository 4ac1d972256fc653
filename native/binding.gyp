{
  "targets": [
    {
      "target_name": "kindling",
      "sources": ["kindling.cc", "common.cc", "memory.cc", "vcpu.cc", "poll.cc", "vsock.cc", "lock.cc", "tty.cc", "vhost-user.cc", "seccomp.cc", "tap.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": [
        "NAPI_VERSION=9",
        "NAPI_DISABLE_CPP_EXCEPTIONS",
        "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS",
        "_GNU_SOURCE"
      ],
      "cflags!": ["-O3"],
      "cflags_cc!": ["-O3", "-std=gnu++17"],
      "cflags": ["-O2", "-Wall"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall"]
    }
  ]
}
