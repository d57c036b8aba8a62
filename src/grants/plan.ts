/**
 * How a grant set becomes the VM's network hardware. One overlay NIC at
 * most: it exists when a network is in play (named by --net, asked by the
 * image, granted) or when a caretaker at the gateway is granted (egress,
 * folders), so a later grant needs no reboot. Its link is up only when
 * something reached through it is granted; a port whose network membership
 * is not granted is isolated at the switch (it reaches the gateway only).
 */
import type { GrantSet } from './grant-set.js';

/** The network a VM joins when it needs the gateway but no network is named (isolated). */
export const GATEWAY_ONLY_NETWORK = 'env';

export interface NetworkPlan {
  network?: string;
  linkUp: boolean;
  /** Not a member: other ports on the network are out of reach. */
  isolated: boolean;
}

export function networkPlan(options: { explicit?: string; asked?: string; granted?: GrantSet }): NetworkPlan {
  const { granted } = options;
  if (!granted) {
    // Legacy callers: the network named is the network granted.
    const network = options.explicit ?? options.asked;
    return { network, linkUp: network !== undefined, isolated: false };
  }
  const viaGateway = granted.net.egress.length > 0 || granted.dirs.length > 0;
  const network = options.explicit ?? granted.net.networks[0] ?? options.asked ?? (viaGateway ? GATEWAY_ONLY_NETWORK : undefined);
  if (network === undefined) return { linkUp: false, isolated: true };
  const member = granted.net.networks.includes(network);
  return { network, linkUp: member || viaGateway, isolated: !member };
}
