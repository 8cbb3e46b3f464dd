// When each live instance's next liveness check is due, for 100,000 instances at once, with
// one Node timer in all. A Node timer per instance costs a Timeout object and a closure each
// (most of the checker's memory at that scale, and seconds to build at start); here an
// instance costs one slot in an array.
//
// Due times are rounded up to `tickMs`: an item runs at most one tick late, never early. Items
// cannot be removed; the caller skips the ones it no longer wants when it takes them.

export class TimerWheel<T> {
  /** Items by slot (due time / tickMs, rounded up). */
  private readonly slots = new Map<number, T[]>();
  /** The slots in `slots`, ascending. Items are nearly always added with the latest due time
   * so far (now + one interval), which is a push; an earlier one is a binary-search insert. */
  private readonly order: number[] = [];
  private timer: NodeJS.Timeout | null = null;
  private armedSlot = Number.POSITIVE_INFINITY;
  private closed = false;
  private count = 0;

  /**
   * @param onDue called when the earliest slot falls due; it calls take() for as many items
   *   as it can run now, and again later when it can run more.
   * @param now monotonic clock in ms (performance.now by default).
   */
  constructor(
    private readonly tickMs: number,
    private readonly onDue: () => void,
    private readonly now: () => number = () => performance.now(),
  ) {}

  get size(): number {
    return this.count;
  }

  /** Schedules item to be taken once `delayMs` from now has passed. */
  add(item: T, delayMs: number): void {
    if (this.closed) return;
    const slot = Math.ceil((this.now() + Math.max(0, delayMs)) / this.tickMs);
    let items = this.slots.get(slot);
    if (!items) {
      items = [];
      this.slots.set(slot, items);
      this.insertSlot(slot);
    }
    items.push(item);
    this.count++;
    if (slot < this.armedSlot) this.arm(slot);
  }

  /**
   * One item whose slot is due, or undefined when none is (then the timer is armed for the
   * next one). Within a slot the order is not defined.
   */
  take(): T | undefined {
    const t = this.now();
    while (this.order.length > 0) {
      const slot = this.order[0] as number;
      if (slot * this.tickMs > t) {
        this.arm(slot);
        return undefined;
      }
      const items = this.slots.get(slot);
      const item = items?.pop();
      if (item !== undefined) {
        this.count--;
        return item;
      }
      this.slots.delete(slot);
      this.order.shift();
    }
    return undefined;
  }

  /** Drops every item and the timer; add() does nothing afterwards. */
  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.slots.clear();
    this.order.length = 0;
    this.count = 0;
  }

  private insertSlot(slot: number): void {
    const order = this.order;
    if (order.length === 0 || slot > (order[order.length - 1] as number)) {
      order.push(slot);
      return;
    }
    let lo = 0;
    let hi = order.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((order[mid] as number) < slot) lo = mid + 1;
      else hi = mid;
    }
    order.splice(lo, 0, slot);
  }

  private arm(slot: number): void {
    if (this.closed || slot >= this.armedSlot) return;
    if (this.timer) clearTimeout(this.timer);
    this.armedSlot = slot;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.armedSlot = Number.POSITIVE_INFINITY;
      this.onDue();
    }, Math.max(0, slot * this.tickMs - this.now()));
  }
}
