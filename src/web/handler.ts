// The landing page's only script (/_hostme/handler.js): the "Open web+hostme:
// links with this site" button. Bundled by scripts/build-web.sh.
import { offerProtocolHandler } from './protocol-handler.js';

offerProtocolHandler(document.getElementById('register-handler') as HTMLButtonElement | null, document.getElementById('handler-status'));
