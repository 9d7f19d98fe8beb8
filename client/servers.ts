/**
 * The client's server pool: the addresses it was given, shuffled, merged with
 * the ones servers announce in their `hello` reply, each with a count of the
 * connection attempts in a row that failed. The connection asks it for the
 * next server to try.
 *
 * @module
 */
import { type Endpoint, formatEndpoint } from "../transport.ts";

/** One server of the pool. */
export interface PoolServer {
  readonly endpoint: Endpoint;
  /** `host:port`, as {@linkcode formatEndpoint} writes it. */
  readonly key: string;
  /** Given to `connect()` (never dropped), or announced by a server. */
  readonly configured: boolean;
  /** Connection attempts in a row that failed; 0 after a handshake. */
  failures: number;
}

/** Shuffles `list` in place (Fisher–Yates). */
function shuffle<T>(list: T[], random: () => number): T[] {
  for (let i = list.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [list[i], list[j]] = [list[j]!, list[i]!];
  }
  return list;
}

/** The servers a client may connect to, and which one it is on. */
export class Servers {
  #list: PoolServer[];
  #current: PoolServer | undefined;
  #shuffle: boolean;
  #random: () => number;

  constructor(
    configured: readonly Endpoint[],
    { shuffle: mix = true, random = Math.random } = {},
  ) {
    const seen = new Set<string>();
    const list: PoolServer[] = [];
    for (const endpoint of configured) {
      const key = formatEndpoint(endpoint);
      if (seen.has(key)) continue;
      seen.add(key);
      list.push({ endpoint, key, configured: true, failures: 0 });
    }
    this.#shuffle = mix;
    this.#random = random;
    this.#list = mix ? shuffle(list, random) : list;
  }

  /** Every server in the order they are tried. */
  get all(): readonly PoolServer[] {
    return this.#list;
  }

  /** The server connected to or being tried, once one has been picked. */
  get current(): PoolServer | undefined {
    return this.#current;
  }

  /**
   * Moves on to the next server to try: the first after the current one, in
   * the pool's order, among those with the fewest failures in a row (the
   * same one again when it is the only one).
   */
  next(): PoolServer {
    const n = this.#list.length;
    const at = this.#current === undefined
      ? -1
      : this.#list.indexOf(this.#current);
    let best: PoolServer | undefined;
    for (let i = 1; i <= n; i++) {
      const s = this.#list[(at + i + n) % n]!;
      if (best === undefined || s.failures < best.failures) best = s;
    }
    return this.#current = best!;
  }

  /** The current server completed a handshake. */
  succeeded(): void {
    if (this.#current !== undefined) this.#current.failures = 0;
  }

  /** Connecting to the current server failed, or its connection was lost. */
  failed(): void {
    if (this.#current !== undefined) this.#current.failures++;
  }

  /**
   * Takes a server's announcement of the registry's servers: new ones join
   * the pool (shuffled, after the others); announced ones that are no longer
   * announced leave it, unless connected to now. Configured ones stay.
   *
   * @returns How many servers joined.
   */
  announced(endpoints: readonly Endpoint[]): number {
    const keys = new Map<string, Endpoint>();
    for (const ep of endpoints) keys.set(formatEndpoint(ep), ep);
    this.#list = this.#list.filter((s) =>
      s.configured || s === this.#current || keys.has(s.key)
    );
    const have = new Set(this.#list.map((s) => s.key));
    const added: PoolServer[] = [];
    for (const [key, endpoint] of keys) {
      if (have.has(key)) continue;
      added.push({ endpoint, key, configured: false, failures: 0 });
    }
    this.#list.push(...(this.#shuffle ? shuffle(added, this.#random) : added));
    return added.length;
  }
}
