import { formatBytes } from './output.js';

/**
 * A one-line progress bar on stderr, drawn only on a terminal and at most
 * ~10 times a second; `done()` clears it so the summary starts clean.
 */
export class ProgressBar {
  private lastDraw = 0;
  private readonly started = performance.now();
  private readonly enabled: boolean;

  constructor(
    private readonly label: string,
    options: { enabled?: boolean } = {},
  ) {
    this.enabled = options.enabled ?? (process.stderr.isTTY === true && !process.env.CI);
  }

  update(done: number, total: number, extra = ''): void {
    if (!this.enabled) return;
    const now = performance.now();
    if (now - this.lastDraw < 100 && done < total) return;
    this.lastDraw = now;
    const width = 30;
    const ratio = total > 0 ? Math.min(1, done / total) : 0;
    const filled = Math.round(ratio * width);
    const rate = done / Math.max(0.001, (now - this.started) / 1000);
    const bar = `${'█'.repeat(filled)}${'░'.repeat(width - filled)}`;
    const line = `${this.label} ${bar} ${(ratio * 100).toFixed(0).padStart(3)}% ${formatBytes(done)}/${formatBytes(total)} ${formatBytes(rate)}/s ${extra}`;
    process.stderr.write(`\r\x1b[2K${line}`);
  }

  /** Free-form status line (e.g. the runner's fetch stats). */
  status(text: string): void {
    if (!this.enabled) return;
    process.stderr.write(`\r\x1b[2K${this.label} ${text}`);
  }

  done(): void {
    if (this.enabled) process.stderr.write('\r\x1b[2K');
  }
}
