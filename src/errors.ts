/**
 * Every error hostme raises on purpose is a HostmeError: a stable `code` that
 * callers branch on (never the message text), a one-line message that says
 * what was wrong and what to do, and structured `context` for --json output.
 */
export class HostmeError extends Error {
  /** Marker that survives copies across realms/worker threads. */
  readonly hostme = true;
  constructor(
    readonly code: string,
    message: string,
    readonly context: Record<string, unknown> = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'HostmeError';
  }

  toJSON(): Record<string, unknown> {
    return { code: this.code, message: this.message, ...this.context };
  }
}

export function isHostmeError(err: unknown, code?: string): err is HostmeError {
  return (
    typeof err === 'object' &&
    err !== null &&
    (err as { hostme?: unknown }).hostme === true &&
    (code === undefined || (err as HostmeError).code === code)
  );
}

export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

/**
 * Process exit status for an error that ends a command (cli/main.ts): usage
 * errors 2, everything else 1. One table, so a command cannot pick its own.
 */
export const EXIT_STATUS: Readonly<Record<string, number>> = { usage: 2 };

export function exitStatusOf(err: unknown): number {
  return isHostmeError(err) ? (EXIT_STATUS[err.code] ?? 1) : 1;
}
