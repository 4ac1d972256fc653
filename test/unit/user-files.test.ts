// openUserFile/readUserFile: one non-blocking open, the check on that fd, then reads from it.
import { execFileSync } from 'node:child_process';
import { appendFileSync, closeSync, ftruncateSync, mkdtempSync, openSync, readdirSync, renameSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/main/config-error.js';
import {
  checkUserFileSize,
  closeUserFile,
  MAX_USER_FILE_BYTES,
  openUserFile,
  readUserFile,
  sizeText,
  USER_FILE_OPEN_FLAGS,
} from '../../src/main/user-files.js';
import { constants } from 'node:fs';

const dir = mkdtempSync(join(tmpdir(), 'kindling-user-files-'));
const regular = join(dir, 'regular');
writeFileSync(regular, Buffer.from('0123456789'));
const fifo = join(dir, 'fifo');
execFileSync('mkfifo', [fifo]);
const sock = join(dir, 'sock');
let server: Server;

beforeAll(async () => {
  server = createServer();
  await new Promise<void>((r) => server.listen(sock, r));
});
afterAll(async () => {
  await new Promise<void>((r) => server.close(() => r()));
  rmSync(dir, { recursive: true, force: true });
});

const openFds = (): number => readdirSync('/proc/self/fd').length;

function refusal(path: string): ConfigError {
  const before = openFds();
  let err: unknown;
  try {
    openUserFile(path, 'initrd');
  } catch (e) {
    err = e;
  }
  expect(openFds()).toBe(before); // the fd is closed on a refusal
  expect(err).toBeInstanceOf(ConfigError);
  expect((err as ConfigError).option).toBe('initrd');
  return err as ConfigError;
}

describe('openUserFile', () => {
  it('opens non-blocking and close-on-exec', () => {
    expect(USER_FILE_OPEN_FLAGS & constants.O_NONBLOCK).toBe(constants.O_NONBLOCK);
    expect(USER_FILE_OPEN_FLAGS & constants.O_NOCTTY).toBe(constants.O_NOCTTY);
    expect(USER_FILE_OPEN_FLAGS & 0o2000000).toBe(0o2000000);
    expect(USER_FILE_OPEN_FLAGS & 3).toBe(constants.O_RDONLY);
  });

  it('reads a regular file from the fd it checked', () => {
    const f = openUserFile(regular, 'kernel');
    expect(f.size).toBe(10);
    expect(readUserFile(f).toString()).toBe('0123456789');
    closeUserFile(f);
  });

  it('refuses a FIFO without blocking (no writer), a character device, a directory and a socket', () => {
    const t0 = performance.now();
    expect(refusal(fifo).message).toBe(`initrd is a FIFO (named pipe), not a regular file: ${fifo}`);
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(refusal('/dev/zero').message).toBe('initrd is a character device, not a regular file: /dev/zero');
    expect(refusal('/dev/null').message).toBe('initrd is a character device, not a regular file: /dev/null');
    expect(refusal(dir).message).toBe(`initrd is a directory, not a regular file: ${dir}`);
    expect(refusal(sock).message).toMatch(/^initrd is a socket.*, not a regular file: /);
    expect(refusal(join(dir, 'nope')).message).toBe(`initrd not found: ${join(dir, 'nope')}`);
    expect(refusal(join(regular, 'below')).message).toMatch(/^initrd not found: /);
    const loop = join(dir, 'loop');
    execFileSync('ln', ['-s', loop, loop]);
    expect(refusal(loop).message).toMatch(/^initrd cannot be read: .*symbolic links/);
    const nl = join(dir, 'new\nline');
    expect(refusal(nl).message).toBe(`initrd not found: ${JSON.stringify(nl)}`);
  });

  it('has no check-then-reopen window: a path swapped for a FIFO after the check still reads the checked file', () => {
    const p = join(dir, 'swapped');
    writeFileSync(p, 'kernel bytes');
    const f = openUserFile(p, 'kernel');
    const other = join(dir, 'other-fifo');
    execFileSync('mkfifo', [other]);
    renameSync(other, p);
    expect(readUserFile(f).toString()).toBe('kernel bytes');
    closeUserFile(f);
  });

  it('reads exactly the checked size: a file that grows is read to its old size, one that shrinks is refused', () => {
    const p = join(dir, 'changing');
    writeFileSync(p, 'abcdef');
    const grows = openUserFile(p, 'initrd');
    appendFileSync(p, 'more and more');
    expect(readUserFile(grows).toString()).toBe('abcdef');
    closeUserFile(grows);
    const shrinks = openUserFile(p, 'initrd');
    truncateSync(p, 2);
    expect(() => readUserFile(shrinks)).toThrow(new RegExp(`^initrd changed while it was read \\(2 of ${shrinks.size} bytes\\): `));
    closeUserFile(shrinks);
  });

  it('checks sizes before reading: over 2 GiB, over the caller’s limit', () => {
    const p = join(dir, 'sparse');
    const fd = openSync(p, 'w');
    ftruncateSync(fd, 3 * 1024 ** 3);
    closeSync(fd);
    const f = openUserFile(p, 'kernel');
    expect(() => checkUserFileSize(f, 2 ** 40, 'x')).toThrow(`kernel is 3 GiB, more than kindling reads (2 GiB): ${p}`);
    expect(() => readUserFile(f)).toThrow(/more than kindling reads/);
    expect(() => checkUserFileSize(f, 2 ** 20, 'the guest’s RAM')).toThrow(/more than kindling reads/);
    closeUserFile(f);
    const r = openUserFile(regular, 'initrd');
    expect(() => checkUserFileSize(r, 9, 'the limit (9 bytes)')).toThrow(`initrd is 10 bytes, larger than the limit (9 bytes): ${regular}`);
    checkUserFileSize(r, 10, 'x');
    closeUserFile(r);
    expect(MAX_USER_FILE_BYTES).toBe(2 ** 31 - 1);
    expect(sizeText(1.5 * 1024 ** 3)).toBe('1.5 GiB');
    expect(sizeText(64 * 1024 ** 2)).toBe('64 MiB');
  });
});
