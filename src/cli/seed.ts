import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { HostmeError, errorMessage } from '../errors.js';
import { cmdlinePreset, makeNoCloudSeed, type SeedNetwork } from '../seed/nocloud.js';
import { emit } from './output.js';

interface SeedCliOptions {
  hostname: string;
  instanceId?: string;
  userData?: string;
  address?: string;
  gateway?: string;
  dns?: string[];
  json?: boolean;
}

export function registerSeed(program: Command): void {
  program
    .command('seed')
    .description('make a cloud-init NoCloud seed image (vfat, label CIDATA) to attach with hostme run --seed')
    .argument('<out>', 'image file to write, e.g. seed.img')
    .requiredOption('--hostname <name>', 'guest hostname (local-hostname)')
    .option('--instance-id <id>', 'cloud-init instance id (default iid-HOSTNAME)')
    .option('--user-data <file>', 'user-data file (default: an empty #cloud-config)')
    .option('--address <cidr>', 'static address with prefix, e.g. 192.168.122.10/24 (default: DHCP)')
    .option('--gateway <ip>', 'default gateway (with --address)')
    .option('--dns <ip...>', 'DNS servers (with --address)')
    .option('--json', 'machine-readable output')
    .action(async (out: string, options: SeedCliOptions) => {
      if (!options.address && (options.gateway || options.dns)) throw new HostmeError('usage', '--gateway and --dns need --address');
      let userData: string | undefined;
      if (options.userData) {
        userData = await readFile(options.userData, 'utf8').catch((err: unknown) => {
          throw new HostmeError('usage', `--user-data ${options.userData}: ${errorMessage(err)}`);
        });
      }
      const network: SeedNetwork | undefined = options.address ? { address: options.address, gateway: options.gateway, dns: options.dns } : undefined;
      const files = await makeNoCloudSeed({ hostname: options.hostname, instanceId: options.instanceId, userData, network }, out);
      const cmdline = network && !network.address.includes(':') ? cmdlinePreset({ hostname: options.hostname, network }) : cmdlinePreset({ hostname: options.hostname });
      emit(options, { seed: out, files, cmdline: cmdline.join(' ') }, () =>
        [`wrote ${out} (vfat, label CIDATA: meta-data, user-data, network-config)`, `  boot with: hostme run ... --seed ${out}`, `  guests without cloud-init: --append '${cmdline.join(' ')}'`].join('\n'),
      );
    });
}
