// Plain Node worker_threads cannot load .ts: transpile the given src/ files (relative paths) into a
// temp dir (removed after the test file) so a worker script there can import them.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { afterAll } from 'vitest';

const SRC = join(dirname(fileURLToPath(import.meta.url)), '../../src');
const tmpDirs: string[] = [];
afterAll(() => {
  for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
});

/** Returns the temp root; `files` land there as .js under the same relative paths. */
export function transpileForWorkers(files: string[], prefix: string): string {
  const root = mkdtempSync(join(tmpdir(), prefix));
  tmpDirs.push(root);
  writeFileSync(join(root, 'package.json'), '{"type":"module"}');
  for (const rel of files) {
    const out = ts.transpileModule(readFileSync(join(SRC, rel), 'utf8'), {
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
    }).outputText;
    const dest = join(root, rel.replace(/\.ts$/, '.js'));
    mkdirSync(dirname(dest), { recursive: true });
    writeFileSync(dest, out);
  }
  return root;
}
