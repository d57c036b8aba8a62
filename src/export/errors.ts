import { HostmeError } from '../errors.js';

/** Codes: 'export-format-unknown', 'export-destination-unknown', 'export-tool-failed', 'export-destination-failed', 'export-source-changed', 'usage'. */
export class ExportError extends HostmeError {
  constructor(code: string, message: string, context: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super(code, message, context, options);
    this.name = 'ExportError';
  }
}
