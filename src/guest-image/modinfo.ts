// Kernel module metadata without kmod: read the `.modinfo` section of a module's ELF (NUL-separated
// `key=value` strings such as `depends=virtio,virtio_ring`, `name=virtio_blk`, `vermagic=…`) and
// resolve a dependency-ordered load list.

export interface ModInfo {
  /** `name=` (module name as the kernel knows it, with underscores), if present. */
  name?: string;
  /** `depends=` split on commas; empty when the module depends on nothing. */
  depends: string[];
  vermagic?: string;
  /** Every key with all its values in order (aliases, parameters, … repeat). */
  fields: Record<string, string[]>;
}

/** Module name as the kernel normalises it: "virtio-rng" and "virtio_rng" are the same module. */
export function moduleName(s: string): string {
  return s.replace(/\.ko(\.(xz|zst|gz))?$/, '').replace(/^.*\//, '').replace(/-/g, '_');
}

/** The raw bytes of a named section of an ELF64 little-endian object, or undefined if absent. */
export function elfSection(elf: Uint8Array, wanted: string): Uint8Array | undefined {
  if (elf.length < 64 || elf[0] !== 0x7f || elf[1] !== 0x45 || elf[2] !== 0x4c || elf[3] !== 0x46) {
    throw new Error('not an ELF file');
  }
  if (elf[4] !== 2 || elf[5] !== 1) throw new Error('not a little-endian ELF64 file');
  const dv = new DataView(elf.buffer, elf.byteOffset, elf.byteLength);
  const shoff = Number(dv.getBigUint64(0x28, true));
  const shentsize = dv.getUint16(0x3a, true);
  const shnum = dv.getUint16(0x3c, true);
  const shstrndx = dv.getUint16(0x3e, true);
  if (shoff === 0 || shnum === 0) return undefined;
  if (shentsize < 64 || shoff + shnum * shentsize > elf.length || shstrndx >= shnum) {
    throw new Error('ELF section header table is out of range');
  }
  const sec = (i: number): { name: number; type: number; offset: number; size: number } => {
    const h = shoff + i * shentsize;
    return {
      name: dv.getUint32(h, true),
      type: dv.getUint32(h + 4, true),
      offset: Number(dv.getBigUint64(h + 0x18, true)),
      size: Number(dv.getBigUint64(h + 0x20, true)),
    };
  };
  const strtab = sec(shstrndx);
  if (strtab.offset + strtab.size > elf.length) throw new Error('ELF section name table is out of range');
  const names = elf.subarray(strtab.offset, strtab.offset + strtab.size);
  const want = new TextEncoder().encode(wanted);
  for (let i = 0; i < shnum; i++) {
    const s = sec(i);
    if (s.name + want.length >= names.length) continue;
    let match = names[s.name + want.length] === 0;
    for (let j = 0; match && j < want.length; j++) match = names[s.name + j] === want[j];
    if (!match) continue;
    if (s.type === 8 /* SHT_NOBITS */) return new Uint8Array(0);
    if (s.offset + s.size > elf.length) throw new Error(`ELF section ${wanted} is out of range`);
    return elf.subarray(s.offset, s.offset + s.size);
  }
  return undefined;
}

/** Parse a kernel module's `.modinfo` section. Throws if the file is not an ELF64 module. */
export function parseModinfo(ko: Uint8Array): ModInfo {
  const sec = elfSection(ko, '.modinfo');
  if (!sec) throw new Error('no .modinfo section (not a kernel module?)');
  const fields: Record<string, string[]> = {};
  const text = new TextDecoder().decode(sec);
  for (const item of text.split('\0')) {
    if (!item) continue;
    const eq = item.indexOf('=');
    if (eq <= 0) continue;
    const key = item.slice(0, eq);
    (fields[key] ??= []).push(item.slice(eq + 1));
  }
  const dep = fields['depends']?.[0] ?? '';
  return {
    name: fields['name']?.[0],
    depends: dep.split(',').map((s) => s.trim()).filter(Boolean).map(moduleName),
    vermagic: fields['vermagic']?.[0],
    fields,
  };
}

/**
 * Order `top` and all their dependencies so that every module comes after its dependencies
 * (depth-first, dependencies in `depends=` order, first occurrence wins). `depsOf(name)` returns a
 * module's direct dependencies, or undefined if the module does not exist (an error names the
 * chain that needed it). Cycles are an error.
 */
export function resolveModuleOrder(top: readonly string[], depsOf: (name: string) => readonly string[] | undefined): string[] {
  const order: string[] = [];
  const done = new Set<string>();
  const visiting: string[] = [];
  const visit = (raw: string): void => {
    const name = moduleName(raw);
    if (done.has(name)) return;
    if (visiting.includes(name)) throw new Error(`module dependency cycle: ${[...visiting, name].join(' -> ')}`);
    const deps = depsOf(name);
    if (!deps) {
      const via = visiting.length ? ` (needed by ${visiting.join(' -> ')})` : '';
      throw new Error(`module ${name} not found${via}`);
    }
    visiting.push(name);
    for (const d of deps) visit(d);
    visiting.pop();
    done.add(name);
    order.push(name);
  };
  for (const t of top) visit(t);
  return order;
}

/** Render a modules.dep (depmod text format) for the given module paths and their full dependency closure. */
export function modulesDep(order: readonly string[], pathOf: (name: string) => string, depsOf: (name: string) => readonly string[]): string {
  const lines: string[] = [];
  for (const m of order) {
    // depmod lists the transitive closure, most dependent first (reverse load order).
    const closure = resolveModuleOrder(depsOf(m), (n) => depsOf(n));
    lines.push(`${pathOf(m)}:${closure.reverse().map((d) => ' ' + pathOf(d)).join('')}`);
  }
  return lines.join('\n') + '\n';
}
