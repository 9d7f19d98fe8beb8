/**
 * Conditional writes, batched: each write is one key's put or delete if the
 * key's mod revision is still what the caller saw (0: absent). The writes
 * asked for in one event-loop turn go to etcd as one txn (up to
 * `maxOps`), several txns may be in flight, and a key is never in two
 * txns at once, so two writes of one key run in the order they were asked
 * for. A txn that takes longer than `stall` ms (etcd electing a leader, a
 * member gone) stops counting against `inFlight`, so that the writes after
 * it go on without waiting for its timeout.
 *
 * A txn commits all its writes or none. When one compare fails, the txn's
 * failure branch reads every key of it: the writes whose compare failed are
 * answered with what the key holds, the others go again in the next txn.
 *
 * @module
 */
import type { KeyValue } from "./_codec.ts";
import type { Compare, KV, Op, OpResult } from "./kv.ts";

/** One conditional write. */
export type Write =
  & {
    /** The key. */
    key: string;
    /** The mod revision the key must still have (0: it must be absent). */
    seen: number;
  }
  & (
    | { op: "put"; value: string; lease?: string }
    | { op: "delete" }
  );

/** How a write ended. */
export type Written =
  /** It took effect at `revision`. */
  | { succeeded: true; revision: number }
  /** The key no longer had the revision seen: it holds `kv` (none: absent) at `revision`. */
  | { succeeded: false; revision: number; kv: KeyValue | undefined };

/** Options of {@linkcode WriteBatcher}. */
export interface BatchOptions {
  /** The most writes in one txn (default 100; etcd takes 128 by default). */
  maxOps?: number;
  /** The most txns in flight at once that are not stalled (default 4). */
  inFlight?: number;
  /** Milliseconds after which a txn in flight counts as stalled (default 100). */
  stall?: number;
  /** The most txns in flight at once, stalled ones included (default 64). */
  maxInFlight?: number;
}

interface Pending {
  w: Write;
  resolve: (r: Written) => void;
  reject: (err: unknown) => void;
}

/** Sends conditional writes to etcd, several to a txn. */
export class WriteBatcher {
  readonly #kv: KV;
  readonly #maxOps: number;
  readonly #inFlight: number;
  readonly #stall: number;
  readonly #maxInFlight: number;
  #queue: Pending[] = [];
  /** Keys in a txn in flight. */
  #busy = new Set<string>();
  /** When each txn in flight was sent (performance.now()). */
  #flying = new Set<{ at: number }>();
  #scheduled = false;
  /** Pumps again when the oldest fresh txn stalls. */
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** How many txns were sent. */
  txns = 0;
  /** How many writes those txns carried. */
  writes = 0;

  /**
   * A batcher that sends through `kv`.
   *
   * @param kv The etcd client's KV service.
   * @param options The most writes per txn and txns in flight.
   */
  constructor(kv: KV, options: BatchOptions = {}) {
    this.#kv = kv;
    this.#maxOps = options.maxOps ?? 100;
    this.#inFlight = options.inFlight ?? 4;
    this.#stall = options.stall ?? 100;
    this.#maxInFlight = options.maxInFlight ?? 64;
  }

  /** Whether another txn may go now; if not, in how many ms to look again. */
  #room(): true | number {
    if (this.#flying.size >= this.#maxInFlight) return Infinity;
    if (this.#flying.size < this.#inFlight) return true;
    const now = performance.now();
    let fresh = 0;
    let oldest = Infinity;
    for (const f of this.#flying) {
      if (now - f.at < this.#stall) {
        fresh++;
        oldest = Math.min(oldest, f.at);
      }
    }
    return fresh < this.#inFlight ? true : oldest + this.#stall - now;
  }

  /**
   * Writes `w` if its compare holds, together with the other writes of this
   * turn.
   *
   * @returns Whether it took effect, and if not what the key holds.
   * @throws What the txn threw (e.g. `UnavailableError`): the write may or
   * may not have taken effect.
   */
  write(w: Write): Promise<Written> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ w, resolve, reject });
      this.#schedule();
    });
  }

  #schedule(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    queueMicrotask(() => {
      this.#scheduled = false;
      this.#pump();
    });
  }

  /** Sends txns while some may fly and some writes can go. */
  #pump(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    while (this.#queue.length > 0) {
      const room = this.#room();
      if (room !== true) {
        // a txn ending pumps again; so does the next one to stall
        if (room !== Infinity) {
          this.#timer = setTimeout(() => this.#pump(), Math.max(1, room));
        }
        return;
      }
      // From the front, up to maxOps writes of keys in no txn; the writes
      // passed over keep their place.
      const part: Pending[] = [];
      const keys = new Set<string>();
      const passed: Pending[] = [];
      let i = 0;
      for (; i < this.#queue.length && part.length < this.#maxOps; i++) {
        const p = this.#queue[i]!;
        if (this.#busy.has(p.w.key) || keys.has(p.w.key)) passed.push(p);
        else {
          part.push(p);
          keys.add(p.w.key);
        }
      }
      if (part.length === 0) return; // every key waits for its txn
      this.#queue = i === this.#queue.length
        ? passed
        : passed.concat(this.#queue.slice(i));
      for (const k of keys) this.#busy.add(k);
      const flight = { at: performance.now() };
      this.#flying.add(flight);
      this.#send(part).finally(() => {
        for (const k of keys) this.#busy.delete(k);
        this.#flying.delete(flight);
        this.#pump();
      });
    }
  }

  async #send(part: Pending[]): Promise<void> {
    this.txns++;
    this.writes += part.length;
    const compare: Compare[] = part.map((p) => ({
      key: p.w.key,
      target: "mod",
      result: "=",
      value: p.w.seen,
    }));
    const success: Op[] = part.map(({ w }) =>
      w.op === "put"
        ? {
          op: "put",
          key: w.key,
          value: w.value,
          ...(w.lease !== undefined ? { lease: w.lease } : {}),
        }
        : { op: "delete", key: w.key }
    );
    const failure: Op[] = part.map(({ w }) => ({ op: "get", key: w.key }));
    let r;
    try {
      r = await this.#kv.txn({ compare, success, failure });
    } catch (err) {
      for (const p of part) p.reject(err);
      return;
    }
    const revision = r.header.revision;
    if (r.succeeded) {
      for (const p of part) p.resolve({ succeeded: true, revision });
      return;
    }
    // Some compare failed: answer those, send the others again first.
    const again: Pending[] = [];
    part.forEach((p, i) => {
      const got = r.responses[i] as OpResult | undefined;
      const kv = got?.op === "get" ? got.kvs[0] : undefined;
      if ((kv?.modRevision ?? 0) === p.w.seen) again.push(p);
      else p.resolve({ succeeded: false, revision, kv });
    });
    if (again.length > 0) this.#queue.unshift(...again);
  }
}
