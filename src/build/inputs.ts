/**
 * Build inputs: values given on the command line (--input key=value,
 * --inputs file.json) checked against the manifest's JSON Schema (ajv:
 * types, defaults, required), and `{{ name }}` templates rendered with them.
 */
import { readFile } from 'node:fs/promises';
import { Worker } from 'node:worker_threads';
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

/** How long checking inputs against a manifest's schema may take (its patterns are the manifest author's regexes). */
export const DEFAULT_VALIDATION_MS = 5000;

/**
 * Applies defaults and checks `given` against the manifest's inputs schema
 * (an object schema, or a map of property schemas which is wrapped into one).
 * Strings from the command line are coerced to the declared types.
 *
 * The schema's `pattern`s are regular expressions from the manifest; one with
 * nested repetition ("^(a|a)+$") takes exponential time on a short input. So
 * validation runs in a worker thread, off the event loop, and is stopped after
 * `timeoutMs`.
 */
export async function resolveInputs(schema: Record<string, unknown> | undefined, given: Record<string, unknown>, timeoutMs = DEFAULT_VALIDATION_MS): Promise<Record<string, unknown>> {
  if (!schema) return structuredClone(given);
  const worker = new Worker(new URL('./inputs-worker.js', import.meta.url));
  try {
    const answer = await new Promise<InputsAnswer>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      // The clock starts once the worker has loaded (its first message): on a
      // starved machine, starting a thread and loading ajv can take seconds.
      worker.once('message', () => {
        timer = setTimeout(
          () => reject(new HostmeError('inputs-timeout', `checking the inputs against the manifest's inputs schema took longer than ${timeoutMs / 1000} s and was stopped: simplify its patterns (nested repetition such as "(a|a)+" takes exponential time)`)),
          timeoutMs,
        );
        worker.once('message', (message: InputsAnswer) => (clearTimeout(timer), resolve(message)));
        worker.postMessage({ schema, given } satisfies InputsQuestion);
      });
      worker.once('error', (err) => (clearTimeout(timer), reject(new HostmeError('inputs-invalid', `inputs: cannot be checked (${err.message})`))));
    });
    if ('values' in answer) return answer.values;
    throw new HostmeError(answer.code, answer.message, answer.problems ? { problems: answer.problems } : {});
  } finally {
    void worker.terminate();
  }
}

export interface InputsQuestion {
  schema: Record<string, unknown>;
  given: Record<string, unknown>;
}
export type InputsAnswer = { values: Record<string, unknown> } | { code: string; message: string; problems?: string[] };

/** The validation itself (run by inputs-worker.ts). */
export function validateInputs({ schema, given }: InputsQuestion): InputsAnswer {
  const values = structuredClone(given);
  const full = schema.type === 'object' || 'properties' in schema ? schema : { type: 'object', properties: schema };
  const ajv = new Ajv({ useDefaults: true, coerceTypes: true, allErrors: true, strict: false });
  let validate;
  try {
    validate = ajv.compile(full);
  } catch (err) {
    return { code: 'build-manifest-invalid', message: `inputs: not a valid JSON Schema (${(err as Error).message})` };
  }
  if (!validate(values)) {
    const problems = (validate.errors ?? []).map((e) => {
      const where = e.instancePath ? `inputs${e.instancePath.replace(/\//g, '.')}` : 'inputs';
      const missing = e.keyword === 'required' ? `.${String((e.params as { missingProperty?: string }).missingProperty)}` : '';
      return `${where}${missing}: ${e.keyword === 'required' ? 'is required' : e.message ?? e.keyword}`;
    });
    return { code: 'inputs-invalid', message: `input values do not match the manifest's inputs schema: ${problems.join('; ')}`, problems };
  }
  return { values };
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
