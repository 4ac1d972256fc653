// Structured VMM logs (pino) on stderr. The CLI's default level is 'warn', so a normal run prints
// only warnings and errors; `--log-level debug` shows every unknown port access and lifecycle step.
// pino is loaded on the first message that passes the level filter: most runs log nothing, and
// loading pino costs ~17 ms of start-up (ready() loads it early, for a process that is about to be
// filtered: see VM.start).
import { createRequire } from 'node:module';
import type { Logger as PinoLogger } from 'pino';

const LEVELS: Record<string, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: Infinity };

type LogFn = (objOrMsg: object | string, msg?: string) => void;
export interface Logger {
  readonly level: string;
  trace: LogFn;
  debug: LogFn;
  info: LogFn;
  warn: LogFn;
  error: LogFn;
  fatal: LogFn;
  /**
   * Load pino now if this level can log anything: once a process-wide seccomp filter is on
   * (VMConfig.seccompThreads 'all') the process can no longer read its modules.
   */
  ready(): void;
}

export function createLogger(level: string, name = 'kindling'): Logger {
  const threshold = LEVELS[level] ?? LEVELS.warn;
  let pino: PinoLogger | undefined;
  const real = (): PinoLogger => {
    if (!pino) {
      const mod = createRequire(import.meta.url)('pino') as typeof import('pino');
      pino = mod.pino({ name, level, base: { pid: process.pid } }, mod.pino.destination({ fd: 2, sync: true }));
    }
    return pino;
  };
  const at =
    (lvl: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal'): LogFn =>
    (objOrMsg, msg) => {
      if (LEVELS[lvl] < threshold) return;
      if (typeof objOrMsg === 'string') real()[lvl](objOrMsg);
      else real()[lvl](objOrMsg, msg);
    };
  const ready = (): void => {
    if (threshold !== Infinity) real();
  };
  return { level, trace: at('trace'), debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error'), fatal: at('fatal'), ready };
}
