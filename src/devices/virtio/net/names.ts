// What a user may name for a NIC (pure; config.ts checks them before anything is opened).

/** A tap name the kernel takes: 1..15 bytes, no '/', no whitespace, not '.' or '..'. */
export function validTapName(name: string): boolean {
  return /^[A-Za-z0-9_.:+-]{1,15}$/.test(name) && name !== '.' && name !== '..';
}

/** `aa:bb:cc:dd:ee:ff` → 6 bytes; undefined for anything else or a multicast address. */
export function parseMac(text: string): Uint8Array | undefined {
  if (!/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(text)) return undefined;
  const b = Uint8Array.from(text.split(':').map((h) => parseInt(h, 16)));
  return b[0] & 1 ? undefined : b;
}

export function formatMac(b: Uint8Array): string {
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}
