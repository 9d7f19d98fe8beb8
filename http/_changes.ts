/**
 * The HTTP side's view of changes: it counts the server's allocate, assume
 * and free events into a change index, keeps a bounded history of them for
 * event streams that resume, remembers when each visible registration
 * appeared, and wakes blocking requests. The registry itself knows nothing of
 * this.
 *
 * @module
 */
import type { RegistryEventType, ServiceRecord } from "../registry.ts";

/** One change, as event streams send it. */
export interface Change {
  /** The change index after this change: the event's id. */
  readonly index: number;
  /** `allocate`, `assume` or `free`. */
  readonly type: RegistryEventType;
  /** Milliseconds since the epoch when the server reported it. */
  readonly time: number;
  /** The registration concerned. */
  readonly record: ServiceRecord;
}

/** What the change log listens to. */
export interface EventSource {
  on(type: RegistryEventType, fn: (record: ServiceRecord) => void): void;
  off(type: RegistryEventType, fn: (record: ServiceRecord) => void): void;
}

const TYPES: readonly RegistryEventType[] = ["allocate", "assume", "free"];

/** The change index, the recent history and the listeners of new changes. */
export class ChangeLog {
  #index = 0;
  #history: Change[] = [];
  #max: number;
  #listeners = new Set<(c: Change) => void>();
  #since = new Map<string, number>();
  #counts = new Map<RegistryEventType, number>();
  #source: EventSource;
  #fns: [RegistryEventType, (r: ServiceRecord) => void][];

  constructor(source: EventSource, history: number) {
    this.#source = source;
    this.#max = history;
    this.#fns = TYPES.map((type) => [type, (r) => this.#add(type, r)]);
    for (const [type, fn] of this.#fns) source.on(type, fn);
  }

  /** The number of changes so far: the registry's change index. */
  get index(): number {
    return this.#index;
  }

  /** The oldest change the history still holds (`index + 1` when empty). */
  get oldest(): number {
    return this.#history[0]?.index ?? this.#index + 1;
  }

  /** Changes by type since the HTTP side started. */
  get counts(): ReadonlyMap<RegistryEventType, number> {
    return this.#counts;
  }

  /** When the registration `id` became visible, in ms since the epoch. */
  since(id: string): number | undefined {
    return this.#since.get(id);
  }

  /**
   * The changes after `index`, or `undefined` when the history no longer
   * holds all of them (or `index` is ahead of this server: it restarted).
   */
  after(index: number): Change[] | undefined {
    if (index > this.#index) return undefined;
    if (index + 1 < this.oldest) return undefined;
    const start = this.#history.length - (this.#index - index);
    return this.#history.slice(start);
  }

  /** Calls `fn` with every new change; returns the remover. */
  listen(fn: (c: Change) => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /** Stops listening to the server. */
  close(): void {
    for (const [type, fn] of this.#fns) this.#source.off(type, fn);
    this.#listeners.clear();
  }

  #add(type: RegistryEventType, record: ServiceRecord): void {
    const time = Date.now();
    const change: Change = { index: ++this.#index, type, time, record };
    this.#counts.set(type, (this.#counts.get(type) ?? 0) + 1);
    if (type === "free") this.#since.delete(record.id);
    else this.#since.set(record.id, time);
    this.#history.push(change);
    if (this.#history.length > this.#max) {
      this.#history.splice(0, this.#history.length - this.#max);
    }
    for (const fn of this.#listeners) fn(change);
  }
}
