// <linux/kvm.h> for C++. Debian 12's linux-libc-dev (6.1) defines __DECLARE_FLEX_ARRAY as an
// anonymous struct holding an empty struct, which is 1 byte in C++ (0 in C): kvm_cpuid2, kvm_msrs
// and kvm_msr_list come out 4 bytes too large, so their ioctl numbers (which encode sizeof) and
// entry offsets are wrong and the kernel answers EINVAL. Newer headers special-case C++; do the same.
#pragma once

#include <linux/stddef.h>
#undef __DECLARE_FLEX_ARRAY
#define __DECLARE_FLEX_ARRAY(TYPE, NAME) TYPE NAME[0]

#include <linux/kvm.h>

#include <cstddef>

static_assert(sizeof(struct kvm_cpuid2) == 8 && offsetof(struct kvm_cpuid2, entries) == 8, "kvm_cpuid2 layout");
static_assert(sizeof(struct kvm_msrs) == 8 && offsetof(struct kvm_msrs, entries) == 8, "kvm_msrs layout");
static_assert(sizeof(struct kvm_msr_list) == 4 && offsetof(struct kvm_msr_list, indices) == 4, "kvm_msr_list layout");
static_assert(sizeof(struct kvm_cpuid_entry2) == 40, "kvm_cpuid_entry2 layout");
static_assert(sizeof(struct kvm_msr_entry) == 16, "kvm_msr_entry layout");
static_assert(KVM_GET_SUPPORTED_CPUID == 0xc008ae05UL, "KVM_GET_SUPPORTED_CPUID encodes sizeof(kvm_cpuid2) = 8");
