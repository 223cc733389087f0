// A mutex over shared memory, for threads (and the main thread) that block anyway.
const FREE = 0;
const HELD = 1;
/** how long one wait sleeps before it looks again (a release notifies; this bounds a missed one) */
const WAIT_MS = 50;

export class SharedLock {
  /** pass it to another thread, which makes its own SharedLock over it */
  readonly memory: Int32Array;

  constructor(memory: Int32Array = new Int32Array(new SharedArrayBuffer(4))) {
    this.memory = memory;
  }

  acquire(): void {
    while (Atomics.compareExchange(this.memory, 0, FREE, HELD) !== FREE) Atomics.wait(this.memory, 0, HELD, WAIT_MS);
  }

  release(): void {
    Atomics.store(this.memory, 0, FREE);
    Atomics.notify(this.memory, 0, 1);
  }
}
