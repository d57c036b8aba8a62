export { buildImage, defaultBuildCacheDir, BUILD_STEPS, type BuildRequest, type BuildResult } from './build-image.js';
export { loadBuildManifest, validateBuildManifest, buildManifestSchema, type BuildManifest } from './build-manifest.js';
export { parseInputPairs, readInputsFile, resolveInputs, renderTemplate } from './inputs.js';
