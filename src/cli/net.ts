import { resolve } from 'node:path';
import type { Command } from 'commander';
import { controlRequest, ensureSwitch, netStateDir } from '../net/control.js';
import type { Lease } from '../net/registry.js';
import type { PortInfo } from '../net/switch.js';
import { emit, parsePositiveInt } from './output.js';

interface NetCliOptions {
  dir?: string;
  json?: boolean;
}

function stateDir(options: NetCliOptions): string {
  return options.dir ? resolve(options.dir) : netStateDir();
}

export function registerNet(program: Command): void {
  const cmd = program.command('net').description("this machine's overlay networks: the switch every hostme run --net joins");
  const common = (c: Command) => c.option('--dir <dir>', 'switch state directory (default $HOSTME_NET_DIR or ~/.local/state/hostme/net)').option('--json', 'print JSON');

  common(cmd.command('ls').description('networks, their subnets, and the ports attached now with their counters')).action(async (options: NetCliOptions) => {
    const dir = stateDir(options);
    await ensureSwitch(dir);
    const reply = await controlRequest(dir, { op: 'ls' });
    const networks = reply.networks as Array<{ name: string; subnet: string; leases: number; ports: PortInfo[] }>;
    emit(options, networks, () =>
      networks.length === 0
        ? 'no networks yet (hostme run LINK --net NAME creates one)'
        : networks
            .map((n) =>
              [
                `${n.name}  ${n.subnet}  ${n.leases} lease(s), ${n.ports.length} port(s) attached`,
                ...n.ports.map((p) => {
                  const drops = Object.entries(p.counters.drops).filter(([, v]) => v > 0).map(([k, v]) => `${k} ${v}`).join(', ');
                  return `  #${p.id} ${p.kind} ${p.instance ?? '-'} ${p.ip ?? 'no address'} ${p.mac ?? ''} rx ${p.counters.rxFrames} tx ${p.counters.txFrames}${drops ? ` dropped: ${drops}` : ''}`;
                }),
              ].join('\n'),
            )
            .join('\n'),
    );
  });

  common(cmd.command('leases').description('the address of every instance that ever joined NETWORK').argument('<network>')).action(async (network: string, options: NetCliOptions) => {
    const dir = stateDir(options);
    await ensureSwitch(dir);
    const leases = (await controlRequest(dir, { op: 'leases', network })).leases as Lease[];
    emit(options, leases, () => (leases.length ? leases.map((l) => `${l.ip}  ${l.host}.${network}.hostme  ${l.mac}  ${l.instance}${l.site ? `  site ${l.site}` : ''}`).join('\n') : `no leases on ${network}`));
  });

  common(cmd.command('token').description('issue a join token for NETWORK (give it to whoever may join)').argument('<network>')).action(async (network: string, options: NetCliOptions) => {
    const dir = stateDir(options);
    await ensureSwitch(dir);
    const reply = await controlRequest(dir, { op: 'token', network });
    emit(options, { network, token: reply.token }, () => String(reply.token));
  });

  common(cmd.command('capture').description('write every frame on NETWORK as pcap to stdout until interrupted (hostme net capture demo > demo.pcap)').argument('<network>')).action(async (network: string, options: NetCliOptions) => {
    const dir = stateDir(options);
    await ensureSwitch(dir);
    process.stdout.on('error', () => process.exit(0));
    await controlRequest(dir, { op: 'capture', network }, process.stdout);
  });

  common(cmd.command('stop').description("stop this machine's switch (guests lose the network until the next hostme run --net or hostme net command starts it again)")).action(async (options: NetCliOptions) => {
    const dir = stateDir(options);
    const running = await controlRequest(dir, { op: 'ping' }).then(() => true, () => false);
    if (running) await controlRequest(dir, { op: 'stop' });
    emit(options, { stopped: running }, () => (running ? 'switch stopped' : 'no switch was running'));
  });

  cmd
    .command('switchd', { hidden: true })
    .description('run the switch process (started on demand by hostme run --net)')
    .option('--dir <dir>')
    .option('--frames-per-second <n>', 'per-port frame rate limit (benchmarks raise it)')
    .action(async (options: NetCliOptions & { framesPerSecond?: string }) => {
      const { startSwitchDaemon } = await import('../net/switchd.js');
      const { DEFAULT_LIMITS } = await import('../net/switch.js');
      const log = (line: string) => process.stderr.write(`${new Date().toISOString()} ${line}\n`);
      const rate = options.framesPerSecond ? parsePositiveInt(options.framesPerSecond) : undefined;
      const limits = rate ? { ...DEFAULT_LIMITS, framesPerSecond: rate, frameBurst: Math.max(DEFAULT_LIMITS.frameBurst, rate / 10) } : undefined;
      const daemon = await startSwitchDaemon(stateDir(options), limits, log);
      if (!daemon) {
        log('another switch already serves this directory');
        return;
      }
      process.once('SIGTERM', () => void daemon.close());
      process.once('SIGINT', () => void daemon.close());
      await daemon.closed;
      process.exit(0);
    });
}
