/**
 * A bounded, forgetful map kept per function instance (Lambda keeps an instance warm between
 * requests): an entry is forgotten `rememberMs` after it was set, and past `capacity` entries the
 * oldest goes first. For hints only, never for a rule about who holds a lock.
 */
import type { Clock } from './clock';

export class Recent<V> {
  private readonly entries = new Map<string, { readonly value: V; readonly at: number }>();

  constructor(
    private readonly clock: Pick<Clock, 'now'>,
    private readonly rememberMs: number,
    private readonly capacity: number,
  ) {}

  set(key: string, value: V): void {
    this.entries.delete(key);
    this.entries.set(key, { value, at: this.clock.now() });
    if (this.entries.size > this.capacity) {
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) this.entries.delete(oldest);
    }
  }

  get(key: string): V | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    if (this.clock.now() - entry.at <= this.rememberMs) return entry.value;
    this.entries.delete(key);
    return undefined;
  }

  delete(key: string): void {
    this.entries.delete(key);
  }
}
