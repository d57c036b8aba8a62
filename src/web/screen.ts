// The run page's two views of the guest, one shown at a time: the serial
// console (xterm.js) and the VGA screen (v86's screen adapter draws into a
// container holding a text layer <div> and a <canvas> for graphics modes).
// Guests that write only to the VGA text console are visible on the screen.
//
// Keyboard: v86's PS/2 keyboard adapter listens on `window` and would swallow
// every key of the page (Tab, Enter on the Stop button…), so it is enabled
// only while the screen panel has focus (click it or Tab to it). The serial
// console takes keys through xterm.js's own textarea, which v86 ignores.
// Browser-only.

export type GuestView = 'console' | 'screen';

/** The part of the v86 emulator the views drive. */
export interface KeyboardSwitch {
  keyboard_set_enabled(enabled: boolean): void;
}

export interface GuestViewsOptions {
  consolePanel: HTMLElement;
  screenPanel: HTMLElement;
  consoleButton: HTMLButtonElement;
  screenButton: HTMLButtonElement;
  initial?: GuestView;
  /** Called after a view became visible (e.g. to refit and focus the terminal). */
  onShow?: (view: GuestView) => void;
}

export function isGuestView(value: string | null): value is GuestView {
  return value === 'console' || value === 'screen';
}

export class GuestViews {
  private current: GuestView = 'console';
  private keyboard: KeyboardSwitch | undefined;

  constructor(private readonly o: GuestViewsOptions) {
    o.consoleButton.addEventListener('click', () => this.show('console'));
    o.screenButton.addEventListener('click', () => this.show('screen'));
    o.screenPanel.addEventListener('focus', () => this.updateKeyboard());
    o.screenPanel.addEventListener('blur', () => this.updateKeyboard());
    this.show(o.initial ?? 'console', false);
    o.consoleButton.disabled = false;
    o.screenButton.disabled = false;
  }

  get view(): GuestView {
    return this.current;
  }

  /** The element to give v86 as `screen_container`. */
  get screenContainer(): HTMLElement {
    return this.o.screenPanel;
  }

  /** The panel that is visible now (the one Fullscreen enlarges). */
  get shownPanel(): HTMLElement {
    return this.current === 'screen' ? this.o.screenPanel : this.o.consolePanel;
  }

  /** Hands the emulator's keyboard switch over once v86 exists (constructed with disable_keyboard: false). */
  attachKeyboard(keyboard: KeyboardSwitch): void {
    this.keyboard = keyboard;
    this.updateKeyboard();
  }

  show(view: GuestView, focus = true): void {
    this.current = view;
    const onScreen = view === 'screen';
    this.o.screenPanel.hidden = !onScreen;
    this.o.consolePanel.hidden = onScreen;
    this.o.screenButton.setAttribute('aria-pressed', String(onScreen));
    this.o.consoleButton.setAttribute('aria-pressed', String(!onScreen));
    document.body.dataset.view = view;
    if (focus && onScreen) this.o.screenPanel.focus();
    this.updateKeyboard();
    this.o.onShow?.(view);
  }

  /** Fullscreen for the panel shown now; keys keep going to the screen (clicking the button took its focus). */
  async requestFullscreen(): Promise<void> {
    const panel = this.shownPanel;
    if (!panel.requestFullscreen) return;
    await panel.requestFullscreen();
    if (this.current === 'screen') this.o.screenPanel.focus();
  }

  private updateKeyboard(): void {
    const enabled = this.current === 'screen' && document.activeElement === this.o.screenPanel;
    this.keyboard?.keyboard_set_enabled(enabled);
    document.body.dataset.screenKeyboard = enabled ? 'on' : 'off';
  }
}
