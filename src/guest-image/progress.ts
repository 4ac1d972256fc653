// Progress reporting for the guest build: a redrawn bar on a TTY, one line per step otherwise.

export interface Progress {
  /** Start step `name` (1-based position among `total`), with optional detail text. */
  step(name: string, detail?: string): void;
  /** Fraction (0..1) of the current step done, for long steps such as downloads. */
  fraction(f: number): void;
  /** A free-form note (e.g. "running apt-get update"). */
  note(line: string): void;
  done(summary: string): void;
  /** Clear a partially drawn bar before an error is printed. */
  fail(): void;
}

export const silentProgress: Progress = {
  step() {},
  fraction() {},
  note() {},
  done() {},
  fail() {},
};

const PREFIX = 'kindling guest';

/** One line per step/note to `log`. */
export function lineProgress(total: number, log: (line: string) => void): Progress {
  let n = 0;
  return {
    step(name, detail) {
      n++;
      log(`${PREFIX}: [${n}/${total}] ${name}${detail ? ` (${detail})` : ''}`);
    },
    fraction() {},
    note(line) {
      log(`${PREFIX}: ${line}`);
    },
    done(summary) {
      log(`${PREFIX}: ${summary}`);
    },
    fail() {},
  };
}

/** A bar redrawn in place on a TTY stream (stderr). */
export function barProgress(total: number, stream: NodeJS.WriteStream, width = 24): Progress {
  let n = 0;
  let name = '';
  let detail = '';
  let frac = 0;
  let lastDraw = 0;
  let drawn = false;
  const draw = (force: boolean): void => {
    const now = Date.now();
    if (!force && now - lastDraw < 80) return;
    lastDraw = now;
    const overall = Math.min(1, Math.max(0, (n - 1 + frac) / total));
    const filled = Math.round(overall * width);
    const bar = '#'.repeat(filled) + '-'.repeat(width - filled);
    const pct = frac > 0 && frac < 1 ? ` ${Math.floor(frac * 100)}%` : '';
    let text = `${PREFIX} [${bar}] ${n}/${total} ${name}${pct}${detail ? ` ${detail}` : ''}`;
    const cols = stream.columns || 80;
    if (text.length > cols - 1) text = text.slice(0, cols - 1);
    stream.write(`\r\x1b[K${text}`);
    drawn = true;
  };
  const clear = (): void => {
    if (drawn) stream.write('\r\x1b[K');
    drawn = false;
  };
  return {
    step(s, d) {
      n++;
      name = s;
      detail = d ?? '';
      frac = 0;
      draw(true);
    },
    fraction(f) {
      frac = f;
      draw(false);
    },
    note(line) {
      clear();
      stream.write(`${PREFIX}: ${line}\n`);
      draw(true);
    },
    done(summary) {
      clear();
      stream.write(`${PREFIX}: ${summary}\n`);
    },
    fail() {
      clear();
    },
  };
}
