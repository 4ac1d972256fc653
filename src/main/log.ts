// Structured VMM logs (pino) on stderr. The CLI's default level is 'warn', so a normal run prints
// only warnings and errors; `--log-level debug` shows every unknown port access and lifecycle step.
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(level: string, name = 'kindling'): Logger {
  return pino({ name, level, base: { pid: process.pid } }, pino.destination({ fd: 2, sync: true }));
}
