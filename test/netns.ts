// Network namespaces for the tests that move frames (test/kvm/net, test/uml/net, …): each test makes
// its own with `ip netns add`, so no frame ever leaves it, and they are deleted after each test.
import { spawnSync } from 'node:child_process';

/** `ip ARGS…` inside namespace `ns`; throws with ip's message when it fails. */
export function ip(ns: string, ...args: string[]): void {
  const r = spawnSync('ip', ['netns', 'exec', ns, 'ip', ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')} in ${ns}: ${r.stderr}`);
}

/**
 * A file's namespaces: netns() adds `<prefix>-<pid>-<n>` with its loopback up; every one made is
 * deleted after each test (register it where its afterEach should run relative to the file's others).
 */
export function testNamespaces(afterEach: (fn: () => void) => void, prefix: string): { netns(): string } {
  let seq = 0;
  const made: string[] = [];
  afterEach(() => {
    for (const ns of made.splice(0)) spawnSync('ip', ['netns', 'del', ns]);
  });
  return {
    netns(): string {
      const ns = `${prefix}-${process.pid}-${seq++}`;
      const r = spawnSync('ip', ['netns', 'add', ns], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`ip netns add ${ns}: ${r.stderr}`);
      made.push(ns);
      ip(ns, 'link', 'set', 'lo', 'up');
      return ns;
    },
  };
}
