import type { PublisherKey } from '../format/node/keys.js';
import { buildImage } from '../build/index.js';
import { exportImage } from '../export/export-image.js';
import { exportFormat } from '../export/formats/index.js';
import { openDestination } from '../export/destinations/index.js';
import type { RenderBuild } from './render-service.js';
import { checkOutputAllowed } from './policy.js';

/**
 * The render service's build (run in a child process by isolated-build.ts):
 * the manifest (confined to its own directory and to the operator's policy,
 * since it comes over the network) is built and signed into the served
 * repository, then exported to each requested destination. Outputs are
 * checked before the build starts, so a bad format fails in a second, not
 * after a full build.
 */
export function repositoryBuild(repoDir: string, key: PublisherKey, cacheDir?: string): RenderBuild {
  return async (context) => {
    for (const output of context.outputs) {
      checkOutputAllowed(output.to, context.policy);
      exportFormat(output.format);
      openDestination(output.to);
    }
    const built = await buildImage({
      manifestPath: context.manifestPath,
      inputs: context.inputs,
      repoDir,
      key,
      workDir: context.workDir,
      cacheDir,
      confine: true,
      untrusted: { mirrors: context.policy.mirrors, fetchUrls: context.policy.fetchUrls, maxFileBytes: context.policy.limits.maxFileBytes, maxDiskBytes: context.policy.limits.maxDiskBytes },
      onStep: context.step,
      log: context.log,
    });
    context.log(`published ${built.name}@${built.version} (${built.manifestDigest.slice(0, 16)})`);
    const exports = [];
    for (const [i, output] of context.outputs.entries()) {
      context.step(`export ${output.format}`, i, context.outputs.length);
      const result = await exportImage({ repo: repoDir, name: built.name, version: built.version, format: output.format, to: output.to, trusted: [key] });
      context.log(`exported ${output.format} to ${result.destination}`);
      exports.push({ format: result.format, destination: result.destination, files: result.files });
    }
    return { image: `${built.name}@${built.version}`, manifestDigest: built.manifestDigest, diskSha256: built.diskSha256, exports };
  };
}
