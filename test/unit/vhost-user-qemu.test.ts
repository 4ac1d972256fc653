// QEMU as the vhost-user frontend of `kindling vhost-user --device blk=…` (TCG: no KVM needed). The
// image's boot sector (hand-assembled below) writes itself to sector 2 with BIOS int 13h, then prints
// a marker on COM1 and halts; QEMU's SeaBIOS finds the vhost-user-blk-pci disk, its virtio-blk
// driver reads sector 1 through kindling (SET_MEM_TABLE with QEMU's memfd guest RAM, rings, kicks,
// calls) and boots it. The host then checks the image: sector 2 is a copy of sector 1. A read-only
// device boots too and its image is left as it was. Needs the built CLI (dist/) and
// qemu-system-x86_64; skips with one loud line without them.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '../..');
const CLI = join(ROOT, 'bin/kindling.js');
const qemu = spawnSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8' });
const missing = qemu.status !== 0 ? 'qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)' : !existsSync(join(ROOT, 'dist/cli/cli.js')) ? 'dist/ is not built (node scripts/build.mjs ts)' : '';
if (missing) console.warn(`SKIPPED test/unit/vhost-user-qemu: ${missing}`);

const MARKER = 'KINDLING-VHOST-USER-BOOT';

/** A 1 MiB image whose boot sector copies itself to CHS 0/0/2 (int 13h AH=3) and prints MARKER on 0x3f8. */
function bootImage(): Buffer {
  // prettier-ignore
  const code = [
    0x31, 0xc0, 0x8e, 0xd8, 0x8e, 0xc0, 0xfc, // xor ax,ax; mov ds,ax; mov es,ax; cld
    0xb8, 0x01, 0x03, 0xb9, 0x02, 0x00, 0xba, 0x80, 0x00, 0xbb, 0x00, 0x7c, 0xcd, 0x13, // write 1 sector from 0:7c00 to C0 H0 S2 of drive 0x80
    0xba, 0xf8, 0x03, 0xbe, 0x27, 0x7c, // mov dx,0x3f8; mov si,msg (0x7c27)
    0xac, 0x84, 0xc0, 0x74, 0x03, 0xee, 0xeb, 0xf8, // lodsb; test al,al; jz done; out dx,al; jmp lodsb
    0xfa, 0xf4, 0xeb, 0xfd, // done: cli; hlt; jmp hlt
  ];
  const img = Buffer.alloc(1 << 20);
  Buffer.from(code).copy(img, 0);
  Buffer.from(`${MARKER}\r\n\0`).copy(img, code.length);
  img[510] = 0x55;
  img[511] = 0xaa;
  return img;
}

const procs: ChildProcess[] = [];
let dir = '';
afterEach(() => {
  for (const p of procs.splice(0)) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = '';
});

function waitFor(p: ChildProcess, stream: 'stdout' | 'stderr', re: RegExp, ms: number): Promise<string> {
  return new Promise((res, rej) => {
    let text = '';
    const t = setTimeout(() => rej(new Error(`no ${re} within ${ms} ms; got: ${text.slice(-400)}`)), ms);
    p[stream]!.on('data', (b: Buffer) => {
      text += b.toString();
      if (re.test(text)) {
        clearTimeout(t);
        res(text);
      }
    });
    p.on('exit', (code) => {
      clearTimeout(t);
      if (!re.test(text)) rej(new Error(`exited (${code}) before ${re}; got: ${text.slice(-400)}`));
    });
  });
}

const exited = (p: ChildProcess): Promise<number | null> => new Promise((r) => (p.exitCode !== null ? r(p.exitCode) : p.once('exit', (c) => r(c))));

async function bootThroughKindling(readOnly: boolean): Promise<{ image: Buffer; before: Buffer; serverExit: number | null; sock: string }> {
  dir = mkdtempSync(join(tmpdir(), 'kindling-vu-qemu-'));
  const imagePath = join(dir, 'boot.img');
  const before = bootImage();
  writeFileSync(imagePath, before);
  const sock = join(dir, 'blk.sock');
  const server = spawn(process.execPath, [CLI, 'vhost-user', '--socket', sock, '--device', `blk=${imagePath}${readOnly ? ',ro' : ''}`], { stdio: ['ignore', 'pipe', 'pipe'] });
  procs.push(server);
  await waitFor(server, 'stderr', /listening on/, 15000);
  const vm = spawn(
    'qemu-system-x86_64',
    // prettier-ignore
    ['-machine', 'pc,accel=tcg', '-m', '64M', '-object', 'memory-backend-memfd,id=mem,size=64M,share=on', '-numa', 'node,memdev=mem',
     '-chardev', `socket,id=c,path=${sock}`, '-device', 'vhost-user-blk-pci,chardev=c,bootindex=1',
     '-display', 'none', '-nodefaults', '-monitor', 'none', '-serial', 'stdio'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  procs.push(vm);
  await waitFor(vm, 'stdout', new RegExp(MARKER), 60000);
  vm.kill('SIGTERM');
  await exited(vm);
  // The frontend went away: the server ends by itself (no --keep-serving), exit 0.
  const serverExit = await exited(server);
  return { image: readFileSync(imagePath), before, serverExit, sock };
}

describe.skipIf(missing !== '')('QEMU (TCG) as the frontend of kindling vhost-user blk', () => {
  it('SeaBIOS boots the boot sector read through kindling, and its int 13h write lands in the image', async () => {
    const { image, before, serverExit, sock } = await bootThroughKindling(false);
    expect(serverExit).toBe(0);
    expect(existsSync(sock)).toBe(false);
    expect(image.subarray(512, 1024)).toEqual(before.subarray(0, 512));
    expect(image.subarray(1024)).toEqual(before.subarray(1024));
  }, 90000);

  it('a read-only device boots the same and its image is left as it was', async () => {
    const { image, before, serverExit } = await bootThroughKindling(true);
    expect(serverExit).toBe(0);
    expect(image).toEqual(before);
  }, 90000);
});
