// A tiny AML (ACPI Machine Language, ACPI 6.x §20) encoder for the few constructs kindling's DSDT
// needs — Scope, Device, Name, integers, strings, EISA ids, Package, and resource-template Buffers
// (Memory32Fixed, I/O port, Extended Interrupt descriptors) — and a decoder for exactly that subset,
// used to read the DSDT back in tests and diagnostics.
//
// Every encoder returns the bytes of one complete AML object (a Uint8Array).

export type Aml = Uint8Array;

// Opcodes and prefixes.
const ZERO_OP = 0x00;
const ONE_OP = 0x01;
const ONES_OP = 0xff;
const BYTE_PREFIX = 0x0a;
const WORD_PREFIX = 0x0b;
const DWORD_PREFIX = 0x0c;
const STRING_PREFIX = 0x0d;
const QWORD_PREFIX = 0x0e;
const NAME_OP = 0x08;
const SCOPE_OP = 0x10;
const BUFFER_OP = 0x11;
const PACKAGE_OP = 0x12;
const EXT_OP_PREFIX = 0x5b;
const DEVICE_OP = 0x82; // after EXT_OP_PREFIX
const DUAL_NAME_PREFIX = 0x2e;
const MULTI_NAME_PREFIX = 0x2f;
const ROOT_CHAR = 0x5c; // '\'
const PARENT_PREFIX_CHAR = 0x5e; // '^'
const NULL_NAME = 0x00;

// Resource descriptors (ACPI 6.x §6.4).
const RES_IO = 0x47; // small, length 7
const RES_END_TAG = 0x79; // small, length 1
const RES_MEMORY32_FIXED = 0x86; // large
const RES_EXTENDED_INTERRUPT = 0x89; // large

/** Largest PkgLength value (28 bits). */
const PKG_LENGTH_MAX = 0x0fff_ffff;

function concat(parts: readonly (Aml | readonly number[])[]): Aml {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function u16(v: number): number[] {
  return [v & 0xff, (v >>> 8) & 0xff];
}
function u32(v: number): number[] {
  return [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff];
}

function checkU32(what: string, v: number): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff_ffff) throw new RangeError(`AML: ${what} ${String(v)} is not a 32-bit value`);
}

/**
 * PkgLength (§20.2.4) for an object whose body (everything after the PkgLength) is `bodyLength`
 * bytes. The encoded value counts the PkgLength bytes themselves. 1 byte holds up to 63; 2, 3 and 4
 * bytes hold 12, 20 and 28 bits (the lead byte's bits 4-5 are then zero).
 */
export function pkgLength(bodyLength: number): number[] {
  for (let n = 1; n <= 4; n++) {
    const total = bodyLength + n;
    if (n === 1 && total <= 0x3f) return [total];
    if (n > 1 && total < 2 ** (4 + 8 * (n - 1))) {
      const out = [((n - 1) << 6) | (total & 0x0f)];
      for (let i = 1; i < n; i++) out.push(Math.floor(total / 2 ** (4 + 8 * (i - 1))) & 0xff);
      return out;
    }
  }
  throw new RangeError(`AML: package of ${bodyLength} bytes exceeds the PkgLength limit (${PKG_LENGTH_MAX})`);
}

/** One 4-character NameSeg; shorter names are padded with '_' (e.g. "_SB" -> "_SB_"). */
export function nameSeg(seg: string): number[] {
  if (!/^[A-Z_][A-Z0-9_]{0,3}$/.test(seg)) throw new RangeError(`AML: invalid NameSeg "${seg}"`);
  const s = seg.padEnd(4, '_');
  return [...s].map((c) => c.charCodeAt(0));
}

/** NameString: optional '\' or '^' prefixes, then dot-separated NameSegs ("\\_SB_.VR00", "_HID"). */
export function nameString(path: string): Aml {
  const out: number[] = [];
  let rest = path;
  if (rest.startsWith('\\')) {
    out.push(ROOT_CHAR);
    rest = rest.slice(1);
  } else {
    while (rest.startsWith('^')) {
      out.push(PARENT_PREFIX_CHAR);
      rest = rest.slice(1);
    }
  }
  const segs = rest === '' ? [] : rest.split('.');
  if (segs.length === 0) out.push(NULL_NAME);
  else if (segs.length === 2) out.push(DUAL_NAME_PREFIX);
  else if (segs.length > 2) {
    if (segs.length > 255) throw new RangeError('AML: name path too long');
    out.push(MULTI_NAME_PREFIX, segs.length);
  }
  for (const s of segs) out.push(...nameSeg(s));
  return Uint8Array.from(out);
}

/** Integer data object in its shortest encoding: ZeroOp, OneOp, or Byte/Word/DWord/QWord const. */
export function integer(value: number | bigint): Aml {
  const v = BigInt(value);
  if (v < 0n || v > 0xffff_ffff_ffff_ffffn) throw new RangeError(`AML: integer ${v} out of range`);
  if (v === 0n) return Uint8Array.of(ZERO_OP);
  if (v === 1n) return Uint8Array.of(ONE_OP);
  const le = (bytes: number): number[] => {
    const out: number[] = [];
    for (let i = 0; i < bytes; i++) out.push(Number((v >> BigInt(8 * i)) & 0xffn));
    return out;
  };
  if (v <= 0xffn) return Uint8Array.from([BYTE_PREFIX, ...le(1)]);
  if (v <= 0xffffn) return Uint8Array.from([WORD_PREFIX, ...le(2)]);
  if (v <= 0xffff_ffffn) return Uint8Array.from([DWORD_PREFIX, ...le(4)]);
  return Uint8Array.from([QWORD_PREFIX, ...le(8)]);
}

/** DWordConst, whatever the value (EisaId and fixed-width fields). */
export function dword(value: number): Aml {
  checkU32('dword', value);
  return Uint8Array.from([DWORD_PREFIX, ...u32(value)]);
}

/** String data object: ASCII 0x01-0x7f, NUL-terminated. */
export function string(s: string): Aml {
  const codes = [...s].map((c) => c.charCodeAt(0));
  if (codes.some((c) => c < 1 || c > 0x7f)) throw new RangeError(`AML: string "${s}" is not printable ASCII`);
  return Uint8Array.from([STRING_PREFIX, ...codes, 0]);
}

/** The 32-bit compressed EISA id of e.g. "PNP0501" (what ASL's EisaId() produces), as a number. */
export function eisaIdValue(id: string): number {
  if (!/^[A-Z]{3}[0-9A-F]{4}$/.test(id)) throw new RangeError(`AML: invalid EISA id "${id}"`);
  const c = (i: number): number => id.charCodeAt(i) - 0x40;
  const be = ((c(0) << 26) | (c(1) << 21) | (c(2) << 16) | parseInt(id.slice(3), 16)) >>> 0;
  // Stored so that the bytes in memory are the big-endian compressed id.
  return (((be & 0xff) << 24) | ((be & 0xff00) << 8) | ((be >>> 8) & 0xff00) | (be >>> 24)) >>> 0;
}

/** EisaId("PNP0501") as an AML DWordConst. */
export function eisaId(id: string): Aml {
  return dword(eisaIdValue(id));
}

/** The 7-character form of a compressed EISA id value (inverse of eisaIdValue). */
export function eisaIdString(value: number): string {
  const be = (((value & 0xff) << 24) | ((value & 0xff00) << 8) | ((value >>> 8) & 0xff00) | (value >>> 24)) >>> 0;
  const ch = (shift: number): string => String.fromCharCode(((be >>> shift) & 0x1f) + 0x40);
  return ch(26) + ch(21) + ch(16) + (be & 0xffff).toString(16).toUpperCase().padStart(4, '0');
}

/** Buffer object: BufferOp PkgLength BufferSize(Integer) bytes. */
export function buffer(data: Uint8Array): Aml {
  const body = concat([integer(data.length), data]);
  return concat([[BUFFER_OP], pkgLength(body.length), body]);
}

/** Package object with at most 255 elements (data objects). */
export function pkg(elements: readonly Aml[]): Aml {
  if (elements.length > 255) throw new RangeError('AML: Package with more than 255 elements');
  const body = concat([[elements.length], ...elements]);
  return concat([[PACKAGE_OP], pkgLength(body.length), body]);
}

/** Name(path, object). */
export function name(path: string, object: Aml): Aml {
  return concat([[NAME_OP], nameString(path), object]);
}

/** Scope(path) { terms }. */
export function scope(path: string, terms: readonly Aml[]): Aml {
  const body = concat([nameString(path), ...terms]);
  return concat([[SCOPE_OP], pkgLength(body.length), body]);
}

/** Device(path) { terms }. */
export function device(path: string, terms: readonly Aml[]): Aml {
  const body = concat([nameString(path), ...terms]);
  return concat([[EXT_OP_PREFIX, DEVICE_OP], pkgLength(body.length), body]);
}

// ---- resource descriptors ----------------------------------------------------------------------

/** Memory32Fixed(ReadWrite|ReadOnly, base, length). */
export function memory32Fixed(base: number, length: number, readWrite = true): Aml {
  checkU32('Memory32Fixed base', base);
  checkU32('Memory32Fixed length', length);
  return Uint8Array.from([RES_MEMORY32_FIXED, ...u16(9), readWrite ? 1 : 0, ...u32(base), ...u32(length)]);
}

/** IO(Decode16, min, max, alignment, length). */
export function ioPort(min: number, max: number, alignment: number, length: number): Aml {
  for (const [w, v, lim] of [
    ['min', min, 0xffff],
    ['max', max, 0xffff],
    ['alignment', alignment, 0xff],
    ['length', length, 0xff],
  ] as const) {
    if (!Number.isInteger(v) || v < 0 || v > lim) throw new RangeError(`AML: IO ${w} ${v} out of range`);
  }
  return Uint8Array.from([RES_IO, 1 /* Decode16 */, ...u16(min), ...u16(max), alignment, length]);
}

export interface InterruptOptions {
  /** ResourceConsumer (default) vs ResourceProducer */
  consumer?: boolean;
  /** Edge (default) vs Level */
  edge?: boolean;
  /** ActiveLow vs ActiveHigh (default) */
  activeLow?: boolean;
  /** Shared vs Exclusive (default) */
  shared?: boolean;
}

/** Interrupt(ResourceConsumer, Edge, ActiveHigh, Exclusive) { gsis } — the extended IRQ descriptor. */
export function extendedInterrupt(gsis: readonly number[], o: InterruptOptions = {}): Aml {
  if (gsis.length < 1 || gsis.length > 255) throw new RangeError('AML: Interrupt needs 1..255 interrupt numbers');
  for (const g of gsis) checkU32('interrupt number', g);
  const flags = ((o.consumer ?? true) ? 1 : 0) | ((o.edge ?? true) ? 2 : 0) | (o.activeLow ? 4 : 0) | (o.shared ? 8 : 0);
  return Uint8Array.from([RES_EXTENDED_INTERRUPT, ...u16(2 + 4 * gsis.length), flags, gsis.length, ...gsis.flatMap(u32)]);
}

/**
 * ResourceTemplate() { descriptors }: a Buffer holding the descriptors and an End Tag whose checksum
 * byte makes the whole template sum to zero.
 */
export function resourceTemplate(descriptors: readonly Aml[]): Aml {
  const data = concat([...descriptors, [RES_END_TAG, 0]]);
  let sum = 0;
  for (const b of data) sum += b;
  data[data.length - 1] = (0x100 - (sum & 0xff)) & 0xff;
  return buffer(data);
}

// ---- decoder (for the subset above) ------------------------------------------------------------

export type AmlValue =
  | { kind: 'integer'; value: bigint }
  | { kind: 'string'; value: string }
  | { kind: 'buffer'; value: Uint8Array }
  | { kind: 'package'; value: AmlValue[] };

export type AmlNode =
  | { kind: 'scope'; path: string; children: AmlNode[] }
  | { kind: 'device'; path: string; children: AmlNode[] }
  | { kind: 'name'; path: string; value: AmlValue };

export class AmlDecodeError extends Error {
  constructor(message: string, offset: number) {
    super(`AML decode error at offset ${offset}: ${message}`);
    this.name = 'AmlDecodeError';
  }
}

/** A cursor over AML bytes; every read is bounded by an explicit end offset. */
interface Cursor {
  readonly bytes: Uint8Array;
  pos: number;
}

function byteAt(c: Cursor, end: number): number {
  if (c.pos >= end) throw new AmlDecodeError('unexpected end of data', c.pos);
  return c.bytes[c.pos++];
}

function take(c: Cursor, end: number, n: number): Uint8Array {
  if (c.pos + n > end) throw new AmlDecodeError(`need ${n} bytes`, c.pos);
  const out = c.bytes.subarray(c.pos, c.pos + n);
  c.pos += n;
  return out;
}

/** Reads a PkgLength; returns the absolute end offset of the package it measures. */
function pkgEnd(c: Cursor, end: number): number {
  const start = c.pos;
  const lead = byteAt(c, end);
  const follow = lead >> 6;
  let len: number;
  if (follow === 0) len = lead & 0x3f;
  else {
    if (lead & 0x30) throw new AmlDecodeError('PkgLength lead byte bits 4-5 set', start);
    len = lead & 0x0f;
    for (let i = 0; i < follow; i++) len += byteAt(c, end) * 2 ** (4 + 8 * i);
  }
  const pend = start + len;
  if (len < c.pos - start || pend > end) throw new AmlDecodeError(`PkgLength ${len} out of bounds`, start);
  return pend;
}

function readNameSeg(c: Cursor, end: number): string {
  const s = String.fromCharCode(...take(c, end, 4));
  if (!/^[A-Z_][A-Z0-9_]{3}$/.test(s)) throw new AmlDecodeError(`invalid NameSeg "${s}"`, c.pos - 4);
  return s;
}

function readNameString(c: Cursor, end: number): string {
  let prefix = '';
  if (c.pos < end && c.bytes[c.pos] === ROOT_CHAR) {
    prefix = '\\';
    c.pos++;
  } else {
    while (c.pos < end && c.bytes[c.pos] === PARENT_PREFIX_CHAR) {
      prefix += '^';
      c.pos++;
    }
  }
  const b = byteAt(c, end);
  let count: number;
  if (b === NULL_NAME) return prefix;
  if (b === DUAL_NAME_PREFIX) count = 2;
  else if (b === MULTI_NAME_PREFIX) count = byteAt(c, end);
  else {
    c.pos--;
    count = 1;
  }
  const segs: string[] = [];
  for (let i = 0; i < count; i++) segs.push(readNameSeg(c, end));
  return prefix + segs.join('.');
}

function readInt(c: Cursor, end: number, bytes: number): bigint {
  const d = take(c, end, bytes);
  let v = 0n;
  for (let i = bytes - 1; i >= 0; i--) v = (v << 8n) | BigInt(d[i]);
  return v;
}

function readDataObject(c: Cursor, end: number): AmlValue {
  const at = c.pos;
  const op = byteAt(c, end);
  switch (op) {
    case ZERO_OP:
      return { kind: 'integer', value: 0n };
    case ONE_OP:
      return { kind: 'integer', value: 1n };
    case ONES_OP:
      return { kind: 'integer', value: 0xffff_ffff_ffff_ffffn };
    case BYTE_PREFIX:
      return { kind: 'integer', value: readInt(c, end, 1) };
    case WORD_PREFIX:
      return { kind: 'integer', value: readInt(c, end, 2) };
    case DWORD_PREFIX:
      return { kind: 'integer', value: readInt(c, end, 4) };
    case QWORD_PREFIX:
      return { kind: 'integer', value: readInt(c, end, 8) };
    case STRING_PREFIX: {
      let s = '';
      for (;;) {
        const ch = byteAt(c, end);
        if (ch === 0) break;
        if (ch > 0x7f) throw new AmlDecodeError('non-ASCII string character', c.pos - 1);
        s += String.fromCharCode(ch);
      }
      return { kind: 'string', value: s };
    }
    case BUFFER_OP: {
      const bend = pkgEnd(c, end);
      const sizeObj = readDataObject(c, bend);
      if (sizeObj.kind !== 'integer') throw new AmlDecodeError('BufferSize is not an integer', at);
      const size = Number(sizeObj.value);
      const data = take(c, bend, bend - c.pos);
      if (size < data.length) throw new AmlDecodeError(`BufferSize ${size} < initializer ${data.length}`, at);
      const value = new Uint8Array(size);
      value.set(data);
      return { kind: 'buffer', value };
    }
    case PACKAGE_OP: {
      const pend = pkgEnd(c, end);
      const n = byteAt(c, pend);
      const value: AmlValue[] = [];
      while (c.pos < pend) value.push(readDataObject(c, pend));
      if (value.length > n) throw new AmlDecodeError(`Package has ${value.length} elements, NumElements ${n}`, at);
      return { kind: 'package', value };
    }
    default:
      throw new AmlDecodeError(`unsupported data object opcode 0x${op.toString(16)}`, at);
  }
}

function readTermList(c: Cursor, end: number): AmlNode[] {
  const nodes: AmlNode[] = [];
  while (c.pos < end) {
    const at = c.pos;
    const op = byteAt(c, end);
    if (op === NAME_OP) {
      const path = readNameString(c, end);
      nodes.push({ kind: 'name', path, value: readDataObject(c, end) });
    } else if (op === SCOPE_OP || (op === EXT_OP_PREFIX && byteAt(c, end) === DEVICE_OP)) {
      const pend = pkgEnd(c, end);
      const path = readNameString(c, pend);
      nodes.push({ kind: op === SCOPE_OP ? 'scope' : 'device', path, children: readTermList(c, pend) });
    } else {
      throw new AmlDecodeError(`unsupported term opcode 0x${op.toString(16)}`, at);
    }
  }
  return nodes;
}

/** Decode an AML TermList (e.g. a DSDT body) made of Scope/Device/Name objects. */
export function decodeAml(bytes: Uint8Array): AmlNode[] {
  return readTermList({ bytes, pos: 0 }, bytes.length);
}

export type ResourceDescriptor =
  | { kind: 'memory32fixed'; readWrite: boolean; base: number; length: number }
  | { kind: 'io'; decode16: boolean; min: number; max: number; alignment: number; length: number }
  | { kind: 'interrupt'; consumer: boolean; edge: boolean; activeLow: boolean; shared: boolean; gsis: number[] };

/**
 * Decode a resource template buffer (as returned in an AmlValue of kind 'buffer'). Requires an End
 * Tag; its checksum byte, if non-zero, must make the template sum to zero.
 */
export function decodeResources(data: Uint8Array): ResourceDescriptor[] {
  const out: ResourceDescriptor[] = [];
  const v = new DataView(data.buffer, data.byteOffset, data.byteLength);
  let p = 0;
  while (p < data.length) {
    const tag = data[p];
    if (tag & 0x80) {
      if (p + 3 > data.length) throw new AmlDecodeError('truncated large resource descriptor', p);
      const len = v.getUint16(p + 1, true);
      const body = p + 3;
      if (body + len > data.length) throw new AmlDecodeError('large resource descriptor runs past the buffer', p);
      if (tag === RES_MEMORY32_FIXED && len === 9) {
        out.push({ kind: 'memory32fixed', readWrite: (data[body] & 1) === 1, base: v.getUint32(body + 1, true), length: v.getUint32(body + 5, true) });
      } else if (tag === RES_EXTENDED_INTERRUPT && len >= 6) {
        const flags = data[body];
        const n = data[body + 1];
        if (2 + 4 * n > len) throw new AmlDecodeError('Interrupt descriptor count exceeds its length', p);
        const gsis: number[] = [];
        for (let i = 0; i < n; i++) gsis.push(v.getUint32(body + 2 + 4 * i, true));
        out.push({ kind: 'interrupt', consumer: (flags & 1) !== 0, edge: (flags & 2) !== 0, activeLow: (flags & 4) !== 0, shared: (flags & 8) !== 0, gsis });
      } else {
        throw new AmlDecodeError(`unsupported large resource 0x${tag.toString(16)} (length ${len})`, p);
      }
      p = body + len;
    } else {
      const type = (tag >> 3) & 0x0f;
      const len = tag & 7;
      if (p + 1 + len > data.length) throw new AmlDecodeError('small resource descriptor runs past the buffer', p);
      if (tag === RES_END_TAG) {
        let sum = 0;
        for (let i = 0; i <= p + 1; i++) sum += data[i];
        if (data[p + 1] !== 0 && (sum & 0xff) !== 0) throw new AmlDecodeError('resource template checksum mismatch', p);
        return out;
      }
      if (tag === RES_IO) {
        out.push({ kind: 'io', decode16: (data[p + 1] & 1) === 1, min: v.getUint16(p + 2, true), max: v.getUint16(p + 4, true), alignment: data[p + 6], length: data[p + 7] });
      } else {
        throw new AmlDecodeError(`unsupported small resource type 0x${type.toString(16)}`, p);
      }
      p += 1 + len;
    }
  }
  throw new AmlDecodeError('resource template has no End Tag', p);
}
