import { codedError } from '../errors.js';

/**
 * Problems with bytes that claim to be hostme format data (manifests, indexes,
 * objects). Codes are stable: callers branch on them.
 *  - format-unsupported: a version/kind this reader does not understand
 *  - manifest-corrupt / index-corrupt: unparsable or inconsistent
 *  - manifest-unsigned / signature-invalid / key-mismatch: trust failures
 *  - object-invalid: bytes that do not hash to the id they were stored under
 *  - object-length-mismatch: genuine bytes of an object, but a different length
 *    than its referrer (index/manifest) claims: the referrer is inconsistent
 */
export const FORMAT_ERROR_CODES = [
  'format-unsupported',
  'manifest-corrupt',
  'index-corrupt',
  'manifest-unsigned',
  'signature-invalid',
  'key-mismatch',
  'key-invalid',
  'chunk-size-invalid',
  'object-invalid',
  'object-length-mismatch',
] as const;
export type FormatErrorCode = (typeof FORMAT_ERROR_CODES)[number];

export const FormatError = codedError('FormatError', FORMAT_ERROR_CODES);
export type FormatError = InstanceType<typeof FormatError>;
