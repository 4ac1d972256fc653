// LZ4 decompression: the raw block format and the "legacy" frame format (magic 0x184C2102) that the
// Linux kernel uses for CONFIG_KERNEL_LZ4 payloads (`lz4 -l`). A legacy stream is the magic followed
// by blocks, each a little-endian u32 compressed size and the compressed bytes; every block
// decompresses independently to at most 8 MiB. A stream may contain the magic again (concatenated
// streams); it is skipped.

export const LZ4_LEGACY_MAGIC = 0x184c2102;
export const LZ4_LEGACY_BLOCK_MAX = 8 << 20;

/**
 * Decompress one raw LZ4 block `src` into `dst` starting at `dstOff`, writing at most up to
 * `dstEnd`. Returns the number of bytes written. Throws on malformed input or output overflow.
 */
export function lz4DecompressBlock(src: Uint8Array, dst: Uint8Array, dstOff = 0, dstEnd = dst.length): number {
  let ip = 0;
  let op = dstOff;
  const iend = src.length;
  if (iend === 0) throw new Error('lz4: empty block');
  for (;;) {
    if (ip >= iend) throw new Error('lz4: block ends after a match (no final literals)');
    const token = src[ip++];
    // literals
    let litLen = token >>> 4;
    if (litLen === 15) {
      let b: number;
      do {
        if (ip >= iend) throw new Error('lz4: truncated literal length');
        b = src[ip++];
        litLen += b;
      } while (b === 255);
    }
    if (ip + litLen > iend) throw new Error('lz4: literals past end of block');
    if (op + litLen > dstEnd) throw new Error('lz4: output overflow');
    if (litLen > 0) {
      if (litLen < 32) {
        for (let i = 0; i < litLen; i++) dst[op + i] = src[ip + i];
      } else {
        dst.set(src.subarray(ip, ip + litLen), op);
      }
      ip += litLen;
      op += litLen;
    }
    if (ip === iend) break; // the last sequence has literals only
    // match
    if (ip + 2 > iend) throw new Error('lz4: truncated match offset');
    const offset = src[ip] | (src[ip + 1] << 8);
    ip += 2;
    if (offset === 0 || offset > op - dstOff) throw new Error('lz4: bad match offset');
    let matchLen = token & 15;
    if (matchLen === 15) {
      let b: number;
      do {
        if (ip >= iend) throw new Error('lz4: truncated match length');
        b = src[ip++];
        matchLen += b;
      } while (b === 255);
    }
    matchLen += 4;
    if (op + matchLen > dstEnd) throw new Error('lz4: output overflow');
    let from = op - offset;
    if (offset >= matchLen && matchLen >= 32) {
      dst.copyWithin(op, from, from + matchLen);
      op += matchLen;
    } else {
      // overlapping copy (run-length style) must go byte by byte
      const end = op + matchLen;
      while (op < end) dst[op++] = dst[from++];
    }
  }
  return op - dstOff;
}

/**
 * Decompress an LZ4 legacy-frame stream. `expectedSize`, if known (the kernel appends it as a
 * little-endian u32 after the stream), sizes the output exactly and is checked; without it the
 * output grows as needed. Trailing bytes shorter than a block header are ignored.
 */
export function lz4DecompressLegacy(data: Uint8Array, expectedSize?: number): Uint8Array {
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  if (data.length < 4 || dv.getUint32(0, true) !== LZ4_LEGACY_MAGIC) {
    throw new Error('lz4: not an LZ4 legacy stream (bad magic)');
  }
  let out = new Uint8Array(expectedSize ?? Math.max(LZ4_LEGACY_BLOCK_MAX, data.length * 4));
  let op = 0;
  let ip = 4;
  while (ip + 4 <= data.length) {
    const size = dv.getUint32(ip, true);
    ip += 4;
    if (size === LZ4_LEGACY_MAGIC) continue; // concatenated stream
    if (size === 0) break;
    if (ip + size > data.length) {
      throw new Error(`lz4: block of ${size} bytes at offset ${ip - 4} runs past the end of the input (${data.length})`);
    }
    if (expectedSize === undefined && op + LZ4_LEGACY_BLOCK_MAX > out.length) {
      const bigger = new Uint8Array(Math.max(out.length * 2, op + LZ4_LEGACY_BLOCK_MAX));
      bigger.set(out.subarray(0, op));
      out = bigger;
    }
    const end = Math.min(out.length, op + LZ4_LEGACY_BLOCK_MAX);
    op += lz4DecompressBlock(data.subarray(ip, ip + size), out, op, end);
    ip += size;
  }
  if (expectedSize !== undefined && op !== expectedSize) {
    throw new Error(`lz4: decompressed ${op} bytes, expected ${expectedSize}`);
  }
  return expectedSize !== undefined ? out : out.slice(0, op);
}
