/**
 * Temporary directories for tests that remove themselves.
 *
 * `tempDir(prefix)` makes a fresh directory under the OS temp dir (`os.tmpdir()`, which honours
 * $TMPDIR) and records it; an `afterAll` hook registered on the importing test file's root suite
 * removes every directory recorded there, recursively, whether the tests passed, failed or were
 * skipped. Vitest runs no hooks of a file whose tests are all skipped (the KVM tests without
 * /dev/kvm), so a directory must not be made while collecting: call `tempDir` (or the getter
 * `lazyTempDir` returns) inside a test or hook. Vitest isolates each test file's module graph, so each file removes only its own
 * directories. A directory a test removes itself early is simply gone (`force: true`).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';

const made = new Set<string>();

afterAll(() => {
  removeTempDirs();
});

/** A new, empty directory `<tmpdir>/<prefix>XXXXXX`, removed after this test file's tests. */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  made.add(dir);
  return dir;
}

/** Removes every directory `tempDir` made so far (also called by the `afterAll` hook). */
export function removeTempDirs(): void {
  for (const dir of made) {
    rmSync(dir, { recursive: true, force: true });
    made.delete(dir);
  }
}

/** A getter that makes the directory on first call (inside a test), then returns the same path. */
export function lazyTempDir(prefix: string): () => string {
  let dir: string | undefined;
  return () => (dir ??= tempDir(prefix));
}
