/**
 * Attaches a guest's serial console to the user's terminal (VmConsole
 * 'stdio'): console output goes to stdout, keystrokes to the guest. On a
 * terminal the input is raw (the guest's shell does the line editing), and
 * Ctrl-] stops the VM, like telnet's escape.
 */
import type { Writable } from 'node:stream';

/** Ctrl-]. */
export const ESCAPE_BYTE = 0x1d;

export interface StdioBridge {
  /** Shows console output on the terminal. */
  show(chunk: Uint8Array): void;
  /** Starts typing the terminal's input into the guest; `onEscape` runs on Ctrl-] (terminals only). */
  attachInput(toGuest: Writable, onEscape: () => void): void;
  /** Gives the terminal back (raw mode off, input paused). */
  detach(): void;
}

export function stdioBridge(stdin: NodeJS.ReadStream = process.stdin, stdout: NodeJS.WriteStream = process.stdout): StdioBridge {
  let detachInput: (() => void) | undefined;
  return {
    show: (chunk) => void stdout.write(chunk),
    attachInput(toGuest, onEscape) {
      if (detachInput || !stdin.readable) return;
      const wasRaw = stdin.isTTY ? stdin.isRaw : false;
      if (stdin.isTTY) stdin.setRawMode(true);
      const onData = (data: Buffer) => {
        if (stdin.isTTY && data.includes(ESCAPE_BYTE)) return onEscape();
        toGuest.write(data);
      };
      stdin.on('data', onData);
      stdin.resume();
      detachInput = () => {
        stdin.off('data', onData);
        if (stdin.isTTY) stdin.setRawMode(wasRaw);
        stdin.pause();
      };
    },
    detach() {
      detachInput?.();
      detachInput = undefined;
    },
  };
}
