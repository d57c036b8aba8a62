// The node dashboard's console page (/console?site=NAME): the site VM's
// serial console in xterm.js over a WebSocket to the node. Bundled by
// scripts/build-web.sh into dist-web/node-console.js.
import { Terminal } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';

const holder = document.getElementById('terminal');
const site = holder?.dataset.site ?? '';
const secret = document.querySelector<HTMLMetaElement>('meta[name=hostme-secret]')?.content ?? '';
const status = document.getElementById('console-status');
if (holder && site) {
  const term = new Terminal({ cursorBlink: true, scrollback: 5000, fontSize: 14 });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(holder);
  fit.fit();
  window.addEventListener('resize', () => fit.fit());
  const ws = new WebSocket(`ws://${location.host}/api/sites/${encodeURIComponent(site)}/console?secret=${encodeURIComponent(secret)}`);
  ws.binaryType = 'arraybuffer';
  const decoder = new TextDecoder();
  ws.onopen = () => {
    if (status) status.textContent = 'connected';
    document.body.dataset.console = 'open';
  };
  ws.onmessage = (event) => term.write(typeof event.data === 'string' ? event.data : decoder.decode(event.data as ArrayBuffer));
  ws.onclose = () => {
    if (status) status.textContent = 'disconnected (the VM stopped or restarted: reload)';
    document.body.dataset.console = 'closed';
  };
  term.onData((data) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(data);
  });
  document.getElementById('fullscreen')?.addEventListener('click', () => void holder.requestFullscreen());
  (window as unknown as { hostmeConsole: { text: () => string } }).hostmeConsole = {
    text: () => {
      const buffer = term.buffer.active;
      const lines: string[] = [];
      for (let i = 0; i < buffer.length; i++) lines.push(buffer.getLine(i)?.translateToString(true) ?? '');
      return lines.join('\n');
    },
  };
}
