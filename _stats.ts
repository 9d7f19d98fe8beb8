/**
 * Counters the server keeps for its HTTP side's `/metrics`: requests by
 * operation, errors by code, and how long a waiting get's answer took from
 * the request that satisfied it. Plain numbers and maps, no timers.
 *
 * @module
 */

/** Upper bounds of the wake-up latency histogram, in seconds. */
export const WAKEUP_BUCKETS: readonly number[] = [
  0.00005,
  0.0001,
  0.00025,
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.1,
];

/** A cumulative histogram with fixed bucket bounds. */
export class Histogram {
  /** Observations at or below each bound (not cumulative; summed on output). */
  readonly counts: number[];
  /** Every observation. */
  count = 0;
  /** The sum of the observations. */
  sum = 0;

  constructor(readonly bounds: readonly number[]) {
    this.counts = bounds.map(() => 0);
  }

  /** Records one value. */
  observe(v: number): void {
    this.count++;
    this.sum += v;
    const bounds = this.bounds;
    for (let i = 0; i < bounds.length; i++) {
      if (v <= bounds[i]!) {
        this.counts[i]!++;
        return;
      }
    }
  }
}

/** What a server counts. */
export class ServerStats {
  /** Requests by operation (`allocate`, `get`, …). */
  readonly requests: Map<string, number> = new Map();
  /** Error answers by code (`INVALID_PATTERN`, `AUTH`, …). */
  readonly errors: Map<string, number> = new Map();
  /**
   * Seconds from receiving the request whose change satisfied a waiting get
   * to handing that get's answer to its connection.
   */
  readonly wakeups: Histogram = new Histogram(WAKEUP_BUCKETS);
  /**
   * Registrations of this server's connections that another's change took
   * away (an `assume` of their port, an eviction), by reason.
   */
  readonly lost: Map<string, number> = new Map();

  /** Counts a request. */
  request(op: string): void {
    this.requests.set(op, (this.requests.get(op) ?? 0) + 1);
  }

  /** Counts an error answer. */
  error(code: string): void {
    this.errors.set(code, (this.errors.get(code) ?? 0) + 1);
  }
}
