// "Open web+hostme: links with this site": registers this origin as the
// browser's handler for web+hostme: links. The server answers the handler URL
// (GET /open?u=LINK, src/server/open-link.ts) with a redirect to the run page.
// Offered behind a button, never on load: some browsers need a user gesture,
// and a permission prompt nobody asked for is a nag. Browser-only.

export const HANDLER_SCHEME = 'web+hostme';

/** The URL template the browser opens for a clicked link; %s is the whole link, percent-encoded. */
export function handlerUrlTemplate(origin: string): string {
  return `${origin}/open?u=%s`;
}

/** Whether this browser can register a handler from this page at all. */
function canRegister(): boolean {
  return typeof navigator.registerProtocolHandler === 'function' && window.isSecureContext;
}

/**
 * Shows `button` (rendered hidden) where registration is possible and wires
 * it; the outcome goes to `status` (a role=status element) and to
 * `document.body.dataset.protocolHandler` ("requested" or "refused").
 */
export function offerProtocolHandler(button: HTMLButtonElement | null, status: HTMLElement | null): void {
  if (!button || !canRegister()) return;
  button.hidden = false;
  button.addEventListener('click', () => {
    const say = (text: string): void => {
      if (status) status.textContent = text;
    };
    try {
      navigator.registerProtocolHandler(HANDLER_SCHEME, handlerUrlTemplate(location.origin));
      document.body.dataset.protocolHandler = 'requested';
      say('Asked the browser to open web+hostme: links here (confirm if it asks).');
    } catch (err) {
      document.body.dataset.protocolHandler = 'refused';
      say(`The browser refused to register web+hostme: links (${err instanceof Error ? err.message : String(err)}).`);
    }
  });
}
