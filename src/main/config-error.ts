// ConfigError: what the user gave (a VMConfig value, a file it names, a kernel image) is unusable.
// Its own module so that the loader's errors can extend it without an import cycle through
// config.ts (config.ts imports the loader to check a kernel when the config is resolved).
//
// Messages are in library terms (VMConfig names: `memMiB`, `disks[1].path`), one line each.
// `option` is the VMConfig key path the error is about ('' when it is about the config as a whole).
// When the message starts with that option's name, `phrase` is the rest of it, so a front end can
// put its own name for the option in front (src/cli/flag-names.ts: `memMiB must be …` → `--mem must be …`).

export class ConfigError extends Error {
  /** The VMConfig key path, e.g. 'memMiB', 'kernel', 'disks[1].path'; '' for the config as a whole. */
  readonly option: string;
  /** The message without its leading option name, when the message is `${option} ${phrase}`. */
  readonly phrase?: string;

  constructor(message: string, option = '', phrase?: string) {
    super(message);
    this.name = 'ConfigError';
    this.option = option;
    if (phrase !== undefined) this.phrase = phrase;
  }

  /** `${option} ${phrase}`, with both recorded (the message names the option first). */
  static about(option: string, phrase: string): ConfigError {
    return new ConfigError(`${option} ${phrase}`, option, phrase);
  }
}
