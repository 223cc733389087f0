/** A least-recently-used cache bounded by the bytes its entries declare; the newest entry always stays. */
export class LruCache<T> {
  private readonly entries = new Map<string, { value: T; bytes: number }>();
  private used = 0;
  constructor(readonly budget: number) {}
  get(key: string): T | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    this.entries.delete(key); // re-inserted: Map order is recency
    this.entries.set(key, e);
    return e.value;
  }
  set(key: string, value: T, bytes: number): void {
    const old = this.entries.get(key);
    if (old) {
      this.used -= old.bytes;
      this.entries.delete(key);
    }
    this.entries.set(key, { value, bytes });
    this.used += bytes;
    for (const [k, e] of this.entries) {
      if (this.used <= this.budget || k === key) break;
      this.entries.delete(k);
      this.used -= e.bytes;
    }
  }
  get bytes(): number {
    return this.used;
  }
  get size(): number {
    return this.entries.size;
  }
}
