/**
 * The console and screen grants (docs/grants.md). Both devices stay attached
 * to QEMU whatever the grant (the serial port, a VGA adapter), so the guest's
 * hardware is stable and a grant needs no reboot; hostme is the caretaker:
 *
 * - console: hostme owns QEMU's serial (stdio). Denied, hostme drops the
 *   guest's output before anyone sees it and ignores what is typed; the
 *   guest keeps a working serial port that nobody listens to.
 * - screen: QEMU runs with `-display none`, so the only way to see the VGA
 *   adapter is a screendump through hostme's control socket, answered only
 *   while the screen is granted.
 */
import { HostmeError } from '../errors.js';

/** The VGA adapter a screen grant adds (present when denied too). */
export const SCREEN_QEMU_ARGS: readonly string[] = ['-device', 'VGA'];

interface ConsoleDevice {
  sendConsole(text: string | Uint8Array): void;
  onConsole(listener: (text: string) => void): () => void;
}

/** Gates what hostme forwards between the guest's serial console and its user. */
export class ConsoleGate {
  constructor(private readonly vm: ConsoleDevice, public granted: boolean) {}

  /** Types into the guest; false (and nothing reaches the guest) while the console is denied. */
  send(text: string | Uint8Array): boolean {
    if (!this.granted) return false;
    this.vm.sendConsole(text);
    return true;
  }

  /** The guest's console output, only while granted (output while denied is dropped, never replayed). */
  onOutput(listener: (text: string) => void): () => void {
    return this.vm.onConsole((text) => {
      if (this.granted) listener(text);
    });
  }
}

/** The screen caretaker: screendumps while granted, a clear refusal otherwise. */
export class ScreenCaretaker {
  constructor(private readonly dump: () => Promise<Buffer>, public granted: boolean, private readonly instance: string) {}

  async screendump(): Promise<Buffer> {
    if (!this.granted) throw new HostmeError('screen-denied', `the screen is not granted to ${this.instance} (hostme grant ${this.instance} screen)`, { instance: this.instance });
    return this.dump();
  }
}

/**
 * Whether `hostme run` shows the console: granted unless --deny-console or a
 * grant file that does not grant it (the console of today on the CLI).
 */
export function consoleOnCli(options: { granted: boolean; denyFlag: boolean; grantFile: boolean }): boolean {
  if (options.denyFlag) return false;
  return options.granted || !options.grantFile;
}

/**
 * Whether the VM gets a VGA adapter: when the image asks for a screen, a
 * screen flag is given (allow or deny: denied, the adapter is there for a
 * later grant), or the grant set grants it.
 */
export function screenAdapter(options: { asked: boolean; flag: boolean; granted: boolean }): boolean {
  return options.asked || options.flag || options.granted;
}
