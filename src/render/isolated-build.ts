/**
 * Each render build runs in a child process of its own (a new process
 * group): whatever the request makes the build do (a pathological input
 * pattern, a huge unpack, debootstrap and its maintainer scripts) cannot stall
 * or bloat the server process, and a job past its time limit or a shutdown
 * kills the whole group at once. The parent relays steps and log lines and
 * removes the work directory.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { HostmeError } from '../errors.js';
import type { PublisherKey } from '../format/node/keys.js';
import type { RenderBuild, RenderContext } from './render-service.js';
import type { RenderPolicy } from './policy.js';

/** Everything the child needs, sent over IPC (the private key never touches the disk). */
export interface ChildBuildRequest {
  repoDir: string;
  keyPem: string;
  cacheDir?: string;
  manifestPath: string;
  workDir: string;
  inputs: Record<string, unknown>;
  outputs: RenderContext['outputs'];
  policy: RenderPolicy;
}

export type ChildMessage =
  | { type: 'step'; name: string; done: number; total: number }
  | { type: 'log'; line: string }
  | { type: 'done'; result: unknown }
  | { type: 'error'; code: string; message: string };

const childScript = fileURLToPath(new URL('./build-child.js', import.meta.url));

export function isolatedRepositoryBuild(repoDir: string, key: PublisherKey, cacheDir?: string): RenderBuild {
  if (!key.privateKey) throw new HostmeError('key-invalid', 'the render service needs a private publisher key');
  const keyPem = key.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
  return (context) => {
    const child = fork(childScript, [], { detached: true, stdio: ['ignore', 'ignore', 'pipe', 'ipc'], serialization: 'advanced' });
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
    const request: ChildBuildRequest = { repoDir, keyPem, cacheDir, manifestPath: context.manifestPath, workDir: context.workDir, inputs: context.inputs, outputs: context.outputs, policy: context.policy };
    child.send(request);
    const kill = () => killGroup(child);
    context.signal.addEventListener('abort', kill, { once: true });
    return new Promise<unknown>((resolve, reject) => {
      let settled = false;
      child.on('message', (message: ChildMessage) => {
        if (message.type === 'step') context.step(message.name, message.done, message.total);
        else if (message.type === 'log') context.log(message.line);
        else if (message.type === 'done') {
          settled = true;
          resolve(message.result);
        } else if (message.type === 'error') {
          settled = true;
          reject(new HostmeError(message.code, message.message));
        }
      });
      child.on('error', (err) => {
        if (settled) return;
        settled = true;
        reject(new HostmeError('render-build-crashed', `the build process could not run: ${err.message}`));
      });
      child.on('exit', (code, signal) => {
        context.signal.removeEventListener('abort', kill);
        killGroup(child); // whatever the build started and left behind
        if (settled) return;
        settled = true;
        if (context.signal.aborted) reject(context.signal.reason);
        else reject(new HostmeError('render-build-crashed', `the build process ended (${signal ?? `exit ${code}`}) without a result${stderr ? `: ${stderr.trim().split('\n').pop()}` : ''}`));
      });
    });
  };
}

function killGroup(child: ChildProcess): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    // already gone
  }
}
