// Installing a role's filter on the calling thread (or, for the `process` role, on every thread with
// TSYNC; likewise `vmm`, by VM.start() with seccompThreads 'all'). Called by the vCPU worker right before its first KVM_RUN, by an I/O worker once its backend
// and watchers exist, and by `kindling vhost-user` once its socket listens: everything a thread opens
// or maps for its lifetime is in place by then, so what is left is its data path.
import type { KvmAddon } from '../kvm/addon.js';
import { compileFilter } from './bpf.js';
import { roleName, rolePolicy, type SeccompMode, type ThreadRole } from './roles.js';

export type SeccompAddon = Pick<KvmAddon, 'seccompInstall' | 'setThreadName'>;

/**
 * Name the thread (its comm, which the kernel's seccomp audit record and `ps -L` show) and install the
 * role's filter unless mode is 'off'. Throws when the kernel refuses the filter (no seccomp support:
 * the caller reports it as a VMM failure rather than running unconfined without saying so).
 */
export function installSeccomp(addon: SeccompAddon, role: ThreadRole, mode: SeccompMode, threadName?: string): void {
  if (threadName !== undefined) addon.setThreadName(threadName);
  if (mode === 'off') return;
  const program = compileFilter(rolePolicy(role, mode, process.pid));
  try {
    addon.seccompInstall(program, role.kind === 'process' || role.kind === 'vmm');
  } catch (e) {
    throw new Error(`seccomp: cannot install the ${roleName(role)} filter (${(e as Error).message}); --seccomp off runs unconfined`);
  }
}
