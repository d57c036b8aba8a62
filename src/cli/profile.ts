import type { Command } from 'commander';
import { profileImage } from '../runner/profile.js';
import { emit, formatBytes } from './output.js';
import { bootOnceCommand, bootOnceRequest, type BootOnceOptions } from './boot-once.js';

export function registerProfile(program: Command): void {
  bootOnceCommand(
    program,
    'profile',
    'boot an image once, record its boot working set and publish it as a new version with a prefetch list',
    'the ready point: record the chunks read until the serial console matches this',
  ).action(async (spec: string, options: BootOnceOptions) => {
    const request = await bootOnceRequest(spec, options);
    const result = await profileImage(request);
    const name = request.name;
    emit(options, result, () => `profiled ${name}@${result.baseVersion}: ${result.chunks} chunks (${formatBytes(result.bytes)}) read before ready; published ${name}@${result.version} with the prefetch list`);
  });
}
