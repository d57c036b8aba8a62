// The landing page's only script (/_hostme/handler.js): the "Open web+hostme:
// links with this site" button and the "Host this site" offer. Bundled by scripts/build-web.sh.
import { offerProtocolHandler } from './protocol-handler.js';
import { offerHosting, offerLanHosting } from './host-button.js';
import { warmOnIntent } from './warm.js';

offerProtocolHandler(document.getElementById('register-handler') as HTMLButtonElement | null, document.getElementById('handler-status'));
const hostOffer = document.getElementById('host-offer');
void offerHosting(hostOffer, document.getElementById('host-link') as HTMLAnchorElement | null, hostOffer?.dataset.page ?? location.href);
// "Run here": start fetching the snapshot and the run page's scripts when the pointer reaches it.
warmOnIntent(document.querySelector<HTMLElement>('a[data-hostme-warm]'));
offerLanHosting(
  {
    container: document.getElementById('host-offer-lan'),
    link: document.getElementById('host-link-lan') as HTMLAnchorElement | null,
    input: document.getElementById('lan-node-address') as HTMLInputElement | null,
    save: document.getElementById('lan-node-save') as HTMLButtonElement | null,
    status: document.getElementById('lan-node-status'),
  },
  hostOffer?.dataset.page ?? location.href,
);
