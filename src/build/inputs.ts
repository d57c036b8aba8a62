/**
 * Build inputs: values given on the command line (--input key=value,
 * --inputs file.json) checked against the manifest's JSON Schema (ajv:
 * types, defaults, required), and `{{ name }}` templates rendered with them.
 */
import { readFile } from 'node:fs/promises';
import { Ajv } from 'ajv';
import { HostmeError } from '../errors.js';

/** `key=value` pairs → object (later pairs win). Values stay strings; the schema coerces types. */
export function parseInputPairs(pairs: readonly string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new HostmeError('usage', `--input wants key=value, got "${pair}"`, { pair });
    out[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return out;
}

export async function readInputsFile(file: string): Promise<Record<string, unknown>> {
  const text = await readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
    throw new HostmeError('inputs-unreadable', `${file}: cannot read inputs (${err.code ?? err.message})`, { file });
  });
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new HostmeError('inputs-invalid', `${file}: not valid JSON (${(err as Error).message})`, { file });
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new HostmeError('inputs-invalid', `${file}: must hold a JSON object`, { file });
  return doc as Record<string, unknown>;
}

/**
 * Applies defaults and checks `given` against the manifest's inputs schema
 * (an object schema, or a map of property schemas which is wrapped into one).
 * Strings from the command line are coerced to the declared types.
 */
export function resolveInputs(schema: Record<string, unknown> | undefined, given: Record<string, unknown>): Record<string, unknown> {
  const values = structuredClone(given);
  if (!schema) return values;
  const full = schema.type === 'object' || 'properties' in schema ? schema : { type: 'object', properties: schema };
  const ajv = new Ajv({ useDefaults: true, coerceTypes: true, allErrors: true, strict: false });
  let validate;
  try {
    validate = ajv.compile(full);
  } catch (err) {
    throw new HostmeError('build-manifest-invalid', `inputs: not a valid JSON Schema (${(err as Error).message})`);
  }
  if (!validate(values)) {
    const problems = (validate.errors ?? []).map((e) => {
      const where = e.instancePath ? `inputs${e.instancePath.replace(/\//g, '.')}` : 'inputs';
      const missing = e.keyword === 'required' ? `.${String((e.params as { missingProperty?: string }).missingProperty)}` : '';
      return `${where}${missing}: ${e.keyword === 'required' ? 'is required' : e.message ?? e.keyword}`;
    });
    throw new HostmeError('inputs-invalid', `input values do not match the manifest's inputs schema: ${problems.join('; ')}`, { problems });
  }
  return values;
}

const PLACEHOLDER = /\{\{\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*\}\}/g;

/** Replaces `{{ name }}`; a missing input is an error naming the template and the input. */
export function renderTemplate(text: string, inputs: Record<string, unknown>, templateName: string): string {
  return text.replace(PLACEHOLDER, (_match, name: string) => {
    const value = inputs[name];
    if (value === undefined || value === null) {
      throw new HostmeError('template-input-missing', `template ${templateName} uses input "${name}", which is not given and has no default`, { template: templateName, input: name });
    }
    return typeof value === 'string' ? value : JSON.stringify(value);
  });
}
