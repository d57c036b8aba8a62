/**
 * A guest's serial console as text: a bounded ring of the last output (the
 * console can print forever), listeners, waiting for a pattern (the ready
 * mark, a test's prompt) and the sign-of-life test of the KVM watchdog.
 */
import { HostmeError } from '../errors.js';

/** Characters kept (the ring is trimmed back to this when it doubles). */
export const CONSOLE_KEEP = 1 << 20;

export interface ConsoleWaitOptions {
  /** Console position (see `length`) to search from; default: now. */
  since?: number;
  /** Rejects with 'console-timeout' after this long; default: no bound. */
  timeoutMs?: number;
  /**
   * Scan only new output plus this many characters before it, instead of all
   * output since `since` on every chunk (the ready mark: a long boot log
   * would otherwise be rescanned for each line).
   */
  overlap?: number;
}

export class ConsoleBuffer {
  #text = '';
  /** Characters dropped from the front of #text. */
  #base = 0;
  #ended = false;
  readonly #listeners = new Set<(text: string) => void>();
  readonly #enders = new Set<() => void>();
  readonly #decoder = new TextDecoder('utf-8');

  constructor(private readonly keep = CONSOLE_KEEP) {}

  /** The output kept (the last `keep` to 2×`keep` characters). */
  get text(): string {
    return this.#text;
  }

  /** Characters seen since the start (a position for `since`). */
  get length(): number {
    return this.#base + this.#text.length;
  }

  /** Raw console bytes (UTF-8, possibly split mid-character). */
  write(chunk: Uint8Array): void {
    const text = this.#decoder.decode(chunk, { stream: true });
    if (!text) return;
    this.#text += text;
    if (this.#text.length > this.keep * 2) {
      const drop = this.#text.length - this.keep;
      this.#text = this.#text.slice(drop);
      this.#base += drop;
    }
    for (const listener of [...this.#listeners]) listener(text);
  }

  /** Subscribes to new output; returns the unsubscribe function. */
  subscribe(listener: (text: string) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** No more output (QEMU exited): pending waits reject with 'vm-exited'. */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    for (const ender of [...this.#enders]) ender();
  }

  /** The last lines, for error messages. */
  tail(lines = 12): string {
    return tailLines(this.#text, lines);
  }

  /** Resolves with the first match of `pattern` in the output after `since`. */
  waitFor(pattern: RegExp, options: ConsoleWaitOptions = {}): Promise<RegExpMatchArray> {
    const since = options.since ?? this.length;
    let scanned = since;
    return new Promise<RegExpMatchArray>((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const finish = (settle: () => void) => {
        this.#listeners.delete(check);
        this.#enders.delete(onEnd);
        if (timer) clearTimeout(timer);
        settle();
      };
      const check = () => {
        const from = options.overlap === undefined ? since : Math.max(since, scanned - options.overlap);
        const m = pattern.exec(this.#text.slice(Math.max(0, from - this.#base)));
        scanned = this.length;
        if (m) finish(() => resolve(m));
      };
      const onEnd = () =>
        finish(() => reject(new HostmeError('vm-exited', `VM exited before the console showed ${pattern}`, { consoleTail: this.tail() })));
      if (options.timeoutMs !== undefined) {
        const ms = options.timeoutMs;
        timer = setTimeout(
          () => finish(() => reject(new HostmeError('console-timeout', `Console did not show ${pattern} within ${ms} ms`, { pattern: pattern.source, consoleTail: this.tail() }))),
          ms,
        );
      }
      this.#listeners.add(check);
      this.#enders.add(onEnd);
      check();
      if (this.#ended) onEnd();
    });
  }
}

export function tailLines(text: string, lines = 12): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

/**
 * Lines a boot stub prints before the kernel proper runs: seen under a KVM
 * that then hangs in the kernel's early setup, so they prove nothing.
 */
const BOOT_STUB_PHRASES = ['Probing EDD', 'Decompressing Linux', 'Parsing ELF', 'Booting the kernel', 'early console'];

/** Whether console output shows the guest running (the KVM watchdog's test): any line that is not a boot stub's. */
export function consoleShowsLife(consoleText: string): boolean {
  return consoleText.split(/\r?\n/).some((raw, i, lines) => {
    const line = raw.trim();
    if (line === '' || BOOT_STUB_PHRASES.some((phrase) => line.startsWith(phrase))) return false;
    // The last line may still be arriving: "Probing ED" is not yet a sign of anything.
    const incomplete = i === lines.length - 1;
    return !(incomplete && BOOT_STUB_PHRASES.some((phrase) => phrase.startsWith(line)));
  });
}
