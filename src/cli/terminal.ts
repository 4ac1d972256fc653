// How the CLI may use the terminal it was started from (POSIX.1-2017, General Terminal Interface,
// 11.1.4 "Terminal Access Control"). Only a process in the terminal's foreground process group may
// change its attributes (raw mode is a tcsetattr) or read from it; a background process that tries
// is sent SIGTTOU / SIGTTIN and, by default, stopped — `timeout 15 kindling run …` typed at a shell
// (timeout puts its child in a process group of its own) used to sit stopped and silent until killed.
//
// consoleMode() is the pure decision; probeTerminal() gathers its inputs from the process (getpgrp
// and tcgetpgrp through the addon, native/tty.cc, since Node has neither).
import { loadAddon } from '../kvm/addon.js';

/**
 * raw:        stdin is a terminal and this process is in its foreground group: raw mode, keys go to
 *             the guest, Ctrl-A is the escape key.
 * background: stdin is a terminal but another process group is in the foreground: the terminal is
 *             not touched (no raw mode, no read — either would stop the process); output still shows.
 * pipe:       stdin is not a terminal: its bytes go to the guest as they are.
 */
export type ConsoleMode = 'raw' | 'background' | 'pipe';

export interface TerminalState {
  /** stdin is a terminal (isatty). */
  isTTY: boolean;
  /** getpgrp(). */
  processGroup: number;
  /** tcgetpgrp(0); -1 when stdin is not this process's controlling terminal. */
  foregroundGroup: number;
}

export function consoleMode(t: TerminalState): ConsoleMode {
  if (!t.isTTY) return 'pipe';
  return t.foregroundGroup > 0 && t.foregroundGroup === t.processGroup ? 'raw' : 'background';
}

/** The terminal state of fd 0 for this process. */
export function probeTerminal(isTTY: boolean): TerminalState {
  const addon = loadAddon();
  return { isTTY, processGroup: addon.processGroup(), foregroundGroup: isTTY ? addon.foregroundProcessGroup(0) : -1 };
}

/**
 * Make sure no terminal access can stop the process: SIGTTOU and SIGTTIN ignored (a write with the
 * terminal's TOSTOP flag set then goes through, a background read fails with EIO instead of stopping).
 */
export function neverStopOnTerminalAccess(): void {
  loadAddon().ignoreJobControlStops();
}
