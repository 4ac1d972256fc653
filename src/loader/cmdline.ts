// Kernel command line builder.
//
// The kernel splits its command line (lib/cmdline.c next_arg) on bytes its ctype table calls
// whitespace — space, \t \n \v \f \r and also 0xA0, which occurs inside UTF-8 sequences such as
// U+00A0 or "à" (C3 A0) — except inside double quotes. A word is `param` or `param=value`; a
// leading `"` on the value (or on the whole word) and the matching trailing `"` are stripped.
// There is no escape character, so a value can never contain `"`.
//
// Sizes are counted in UTF-8 bytes. `maxSize` is the size of the buffer the kernel copies,
// including the terminating NUL (COMMAND_LINE_SIZE semantics), so the text itself may be at most
// maxSize - 1 bytes. A bzImage header's cmdline_size excludes the NUL: pass cmdline_size + 1.
import { CMDLINE_MAX_SIZE } from '../arch/x86_64/layout.js';
import { CmdlineError } from './errors.js';

export { CmdlineError };

const encoder = new TextEncoder();

/** Bytes the kernel's isspace() accepts (lib/ctype.c: \t \n \v \f \r, space and 0xA0). */
export function isKernelSpaceByte(b: number): boolean {
  return b === 0x20 || (b >= 0x09 && b <= 0x0d) || b === 0xa0;
}

function hasKernelSpace(bytes: Uint8Array): boolean {
  for (const b of bytes) if (isKernelSpaceByte(b)) return true;
  return false;
}

function codepoint(c: string): string {
  return 'U+' + (c.codePointAt(0) ?? 0).toString(16).toUpperCase().padStart(4, '0');
}

/** Throws unless s is well-formed Unicode (no lone surrogates) without NUL or control characters. */
function checkText(what: string, s: string, allowTab: boolean): void {
  if (/[\ud800-\udfff]/u.test(s)) throw new CmdlineError(`${what} is not valid UTF-8 (lone surrogate)`);
  // C0 controls, DEL and C1 controls.
  const bad = allowTab ? /[\u0000-\u0008\u000a-\u001f\u007f-\u009f]/u : /[\u0000-\u001f\u007f-\u009f]/u;
  const m = bad.exec(s);
  if (m) {
    const c = m[0];
    throw new CmdlineError(`${what} contains ${c === '\0' ? 'a NUL byte' : `a control character (${codepoint(c)})`}`);
  }
}

function checkKey(key: string): void {
  if (key.length === 0) throw new CmdlineError('kernel parameter name is empty');
  checkText(`kernel parameter name ${JSON.stringify(key)}`, key, false);
  if (key.includes('=') || key.includes('"') || hasKernelSpace(encoder.encode(key))) {
    throw new CmdlineError(`kernel parameter name ${JSON.stringify(key)} must not contain '=', '"' or whitespace`);
  }
}

export class KernelCmdline {
  /** Buffer size in bytes including the terminating NUL. */
  readonly maxSize: number;
  private text = '';
  private byteLen = 0;

  constructor(maxSize: number = CMDLINE_MAX_SIZE) {
    if (!Number.isSafeInteger(maxSize) || maxSize < 1) throw new RangeError(`invalid command line size ${maxSize}`);
    this.maxSize = maxSize;
  }

  /** Length of the command line in UTF-8 bytes, without the NUL. */
  get length(): number {
    return this.byteLen;
  }

  /** Append one word (e.g. "quiet", "console=ttyS0"): no whitespace, quotes or control characters. */
  push(word: string): this {
    if (word.length === 0) throw new CmdlineError('empty kernel command line word');
    checkText(`kernel command line word ${JSON.stringify(word)}`, word, false);
    if (word.includes('"') || hasKernelSpace(encoder.encode(word))) {
      throw new CmdlineError(`kernel command line word ${JSON.stringify(word)} must not contain '"' or whitespace (use set())`);
    }
    if (word.startsWith('=')) throw new CmdlineError(`kernel command line word ${JSON.stringify(word)} must not start with '='`);
    return this.add(word);
  }

  /** Append key=value; the value is quoted (key="a b") if the kernel would split it. */
  set(key: string, value: string | number | boolean): this {
    checkKey(key);
    const v = String(value);
    checkText(`value of kernel parameter ${key}`, v, true);
    if (v.includes('"')) throw new CmdlineError(`value of kernel parameter ${key} must not contain '"'`);
    return this.add(hasKernelSpace(encoder.encode(v)) ? `${key}="${v}"` : `${key}=${v}`);
  }

  /**
   * Append user-supplied text (several words). It must be well-formed UTF-8 without NUL or control
   * characters other than tab, and its double quotes must balance (an open quote would swallow
   * everything appended after it). Leading/trailing whitespace is dropped.
   * Note that anything after a "--" word is passed to init, not to the kernel.
   */
  append(raw: string): this {
    checkText('kernel command line', raw, true);
    let quotes = 0;
    for (const c of raw) if (c === '"') quotes++;
    if (quotes % 2 !== 0) throw new CmdlineError('kernel command line has an unbalanced double quote');
    const trimmed = trimKernelSpace(raw);
    if (trimmed.length === 0) return this;
    return this.add(trimmed);
  }

  toString(): string {
    return this.text;
  }

  /** UTF-8 bytes with the terminating NUL. */
  bytes(): Uint8Array {
    const out = new Uint8Array(this.byteLen + 1);
    encoder.encodeInto(this.text, out);
    return out;
  }

  private add(piece: string): this {
    const next = this.text.length === 0 ? piece : `${this.text} ${piece}`;
    const len = encoder.encode(next).length;
    if (len + 1 > this.maxSize) {
      throw new CmdlineError(`kernel command line is too long: ${len} bytes, the limit is ${this.maxSize - 1}`);
    }
    this.text = next;
    this.byteLen = len;
    return this;
  }
}

/** Strip leading and trailing characters the kernel treats as whitespace (0xA0 only as U+00A0). */
function trimKernelSpace(s: string): string {
  return s.replace(/^[ \t\n\v\f\r\u00a0]+|[ \t\n\v\f\r\u00a0]+$/gu, '');
}
