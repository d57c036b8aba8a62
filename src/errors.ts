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

/** A HostmeError class whose constructor takes only the codes of one layer's typed list. */
export type CodedErrorClass<C extends string> = new (code: C, message: string, context?: Record<string, unknown>, options?: { cause?: unknown }) => HostmeError & { readonly code: C };

/**
 * The one way a layer gets its error class from its code list (format/errors.ts,
 * store/errors.ts): `new FormatError('manifest-corrupt', …)` type-checks the code,
 * `instanceof` tells the layer, `isHostmeError(err, code)` works as for any other.
 */
export function codedError<C extends string>(name: string, _codes: readonly C[]): CodedErrorClass<C> {
  const Coded = class extends HostmeError {
    declare readonly code: C;
    constructor(code: C, message: string, context: Record<string, unknown> = {}, options?: { cause?: unknown }) {
      super(code, message, context, options);
    }
  };
  Object.defineProperty(Coded, 'name', { value: name });
  return Coded as CodedErrorClass<C>;
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
