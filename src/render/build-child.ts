/** The child process side of isolated-build.ts: one build, then exit. */
import { isHostmeError, errorMessage } from '../errors.js';
import { parsePrivateKeyPem } from '../format/node/keys.js';
import { repositoryBuild } from './repository-build.js';
import type { ChildBuildRequest, ChildMessage } from './isolated-build.js';

function send(message: ChildMessage): Promise<void> {
  return new Promise((resolve) => process.send!(message, () => resolve()));
}

// The service died (even by SIGKILL): nothing may go on building without it.
process.on('disconnect', () => process.kill(-process.pid, 'SIGKILL'));

process.once('message', (request: ChildBuildRequest) => {
  void (async () => {
    const build = repositoryBuild(request.repoDir, parsePrivateKeyPem(request.keyPem), request.cacheDir);
    try {
      const result = await build({
        jobId: '',
        workDir: request.workDir,
        manifestPath: request.manifestPath,
        inputs: request.inputs,
        outputs: request.outputs,
        policy: request.policy,
        signal: new AbortController().signal, // the parent kills this process instead
        step: (name, done, total) => void send({ type: 'step', name, done, total }),
        log: (line) => void send({ type: 'log', line }),
      });
      await send({ type: 'done', result });
    } catch (err) {
      await send({ type: 'error', code: isHostmeError(err) ? err.code : 'render-build-failed', message: errorMessage(err) });
    }
    process.removeAllListeners('disconnect');
    process.exit(0); // worker pools or sockets the build left open must not keep the process alive
  })();
});
