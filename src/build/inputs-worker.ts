/** Worker: checks build inputs against a manifest's schema (see resolveInputs: its patterns may be hostile). */
import { parentPort } from 'node:worker_threads';
import { validateInputs, type InputsQuestion } from './inputs.js';

parentPort?.once('message', (question: InputsQuestion) => {
  parentPort!.postMessage(validateInputs(question));
});
// Loaded (ajv included): the caller's clock starts now.
parentPort?.postMessage('ready');
