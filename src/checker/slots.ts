// The global bound on connect attempts in flight: thousands of due checks wait here in FIFO
// order instead of opening thousands of sockets at once.

export class ConnectSlots {
  private inUse = 0;
  private readonly waiting: Array<(granted: boolean) => void> = [];
  private closed = false;

  constructor(readonly size: number) {}

  get inFlight(): number {
    return this.inUse;
  }

  get queued(): number {
    return this.waiting.length;
  }

  /** Resolves true with a slot held, or false once the slots are closed. */
  acquire(): Promise<boolean> {
    if (this.closed) return Promise.resolve(false);
    if (this.inUse < this.size) {
      this.inUse++;
      return Promise.resolve(true);
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  release(): void {
    const next = this.waiting.shift();
    // The slot passes straight to the next waiter, so the count never dips and overshoots.
    if (next) next(true);
    else this.inUse--;
  }

  /** Turns every waiter away; slots already held are still released by their holders. */
  close(): void {
    this.closed = true;
    for (const w of this.waiting.splice(0)) w(false);
  }
}
