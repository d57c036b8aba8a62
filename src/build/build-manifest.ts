/**
 * The build manifest (hostme.json / hostme.yaml): what `hostme build` turns
 * into a published image. Documented in docs/build.md. Validation errors name
 * the path and the rule, e.g. `hardware.memoryMiB: must be >= 16`.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { HostmeError } from '../errors.js';
import { imageNamePattern, versionPattern } from '../format/manifest.js';

const sha256 = z.string().regex(/^[0-9a-f]{64}$/, 'must be a sha256 digest (64 lowercase hex digits)');
const imagePath = z.string().regex(/^\/.*/, 'must be an absolute path in the image (starting with "/")').refine((p) => !p.split('/').includes('..'), 'must not contain ".."');
const size = z.string().regex(/^(auto|\d+[KMG]?)$/, 'must be a size like "64M", "1G" or "auto"');
const mode = z.union([z.string().regex(/^0?[0-7]{3,4}$/, 'must be an octal mode like "0755"'), z.number().int().min(0).max(0o7777)]);

const tarballBase = z
  .object({ path: z.string().min(1).optional(), url: z.string().url('must be a URL').optional(), sha256 })
  .strict()
  .refine((t) => (t.path === undefined) !== (t.url === undefined), 'needs exactly one of "path" or "url"');

const base = z
  .object({
    tarball: tarballBase.optional(),
    dir: z.string().min(1).optional(),
    debootstrap: z
      .object({
        suite: z.string().min(1),
        variant: z.enum(['minbase', 'buildd', 'fakechroot']).default('minbase'),
        packages: z.array(z.string().min(1)).default([]),
        mirror: z.string().url('must be a URL').optional(),
      })
      .strict()
      .optional(),
    debs: z.array(z.string().regex(/^[a-z0-9][a-z0-9+.-]*(=[^\s]+)?$/, 'must be a Debian package name (optionally name=version)')).min(1, 'must list at least one package').optional(),
  })
  .strict()
  .refine((b) => [b.tarball, b.dir, b.debootstrap, b.debs].filter((x) => x !== undefined).length === 1, 'must have exactly one of "tarball", "dir", "debootstrap" or "debs"');

const debianKernel = z
  .object({
    debianPackage: z.string().regex(/^[a-z0-9][a-z0-9+.-]*$/, 'must be a Debian package name'),
    /** Default: vmlinux for direct boot, bzImage with bootloader "bios". */
    extract: z.enum(['vmlinux', 'bzImage']).optional(),
    /** Kernel modules (names, e.g. "virtio_net") copied with their dependencies into /lib/modules; load order in /etc/hostme/modules. */
    modules: z.array(z.string().regex(/^[A-Za-z0-9_-]+$/, 'must be a module name')).default([]),
  })
  .strict();
const kernelSource = z.union([z.string().min(1), debianKernel]);

const boot = z
  .object({
    kernel: kernelSource,
    initrd: z.string().min(1).optional(),
    cmdline: z.string().default('console=ttyS0'),
    bootloader: z.enum(['bios']).optional(),
  })
  .strict();

export const buildManifestSchema = z
  .object({
    name: z.string().regex(imageNamePattern, 'must be lowercase letters, digits, ".", "_" or "-" (at most 64)'),
    version: z.union([z.string(), z.number().transform(String)]).pipe(z.string().regex(versionPattern, 'must be a valid version (e.g. "1", "1.2.0")')),
    description: z.string().max(500).optional(),
    base,
    files: z.array(z.object({ src: z.string().min(1), dest: imagePath, mode: mode.optional() }).strict()).default([]),
    directories: z.array(z.object({ path: imagePath, mode: mode.optional() }).strict()).default([]),
    links: z.array(z.object({ path: imagePath, target: z.string().min(1) }).strict()).default([]),
    templates: z.array(imagePath).default([]),
    inputs: z.record(z.string(), z.unknown()).optional(),
    persistent: z.array(imagePath).default([]),
    volatile: z.array(imagePath).default([]),
    boot: boot.optional(),
    hardware: z
      .object({
        arch: z.enum(['x86_64', 'i686']).default('x86_64'),
        memoryMiB: z.number().int('must be an integer').min(16, 'must be >= 16').max(1 << 20, 'must be <= 1048576').default(256),
        cpus: z.number().int('must be an integer').min(1, 'must be >= 1').max(64, 'must be <= 64').default(1),
        diskSize: size.default('auto'),
      })
      .strict()
      .default({ arch: 'x86_64', memoryMiB: 256, cpus: 1, diskSize: 'auto' }),
    outputs: z.array(z.object({ format: z.string().min(1), to: z.string().min(1) }).strict()).optional(),
  })
  .strict();

export type BuildManifest = z.output<typeof buildManifestSchema>;
export type KernelSource = z.output<typeof kernelSource>;

function ruleOf(issue: z.core.$ZodIssue): string {
  switch (issue.code) {
    case 'invalid_type':
      return issue.input === undefined ? `is required (${issue.expected})` : `must be ${issue.expected === 'object' ? 'an' : 'a'} ${issue.expected}`;
    case 'too_small':
      if (!issue.message.startsWith('Too small')) return issue.message;
      return issue.origin === 'array' ? `must have at least ${issue.minimum} item(s)` : issue.origin === 'string' ? `must not be empty` : `must be >= ${issue.minimum}`;
    case 'too_big':
      return issue.message.startsWith('Too big') ? `must be <= ${issue.maximum}` : issue.message;
    case 'unrecognized_keys':
      return `unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `"${k}"`).join(', ')}`;
    case 'invalid_value':
      return `must be one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`;
    case 'invalid_union':
      return 'does not match any allowed form';
    default:
      return issue.message;
  }
}

function pathOf(p: readonly PropertyKey[]): string {
  let out = '';
  for (const part of p) out += typeof part === 'number' ? `[${part}]` : out ? `.${String(part)}` : String(part);
  return out || '(manifest)';
}

/** Validates a parsed manifest document; throws HostmeError 'build-manifest-invalid' listing "path: rule" lines. */
export function validateBuildManifest(doc: unknown, file = 'manifest'): BuildManifest {
  const result = buildManifestSchema.safeParse(doc);
  if (result.success) return result.data;
  const problems = result.error.issues.map((issue) => `${pathOf(issue.path)}: ${ruleOf(issue)}`);
  throw new HostmeError('build-manifest-invalid', `${file}: ${problems.join('; ')}`, { file, problems });
}

/** Reads hostme.json / hostme.yaml (by extension; JSON also accepted for any other name). */
export async function loadBuildManifest(file: string): Promise<BuildManifest> {
  const text = await readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
    throw new HostmeError('build-manifest-unreadable', `${file}: cannot read the build manifest (${err.code ?? err.message})`, { file });
  });
  let doc: unknown;
  try {
    doc = /\.ya?ml$/i.test(file) ? parseYaml(text) : JSON.parse(text);
  } catch (err) {
    throw new HostmeError('build-manifest-invalid', `${file}: not valid ${/\.ya?ml$/i.test(file) ? 'YAML' : 'JSON'}: ${(err as Error).message.split('\n')[0]}`, { file });
  }
  return validateBuildManifest(doc, path.basename(file));
}

/** "64M" → bytes; "auto" → undefined. */
export function parseDiskSize(text: string): number | undefined {
  if (text === 'auto') return undefined;
  const m = /^(\d+)([KMG]?)$/.exec(text)!;
  return Number(m[1]) * 1024 ** (' KMG'.indexOf(m[2] || ' ') || 0);
}

export function parseMode(mode: string | number | undefined): number | undefined {
  if (mode === undefined) return undefined;
  return typeof mode === 'number' ? mode : parseInt(mode, 8);
}
