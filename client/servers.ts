/**
 * The client's server pool: the addresses it was given (parsed here from
 * `connect()`'s forms), shuffled, merged with the ones servers announce in
 * their `hello` reply, each with a count of the connection attempts in a row
 * that failed. The connection asks it for the next server to try.
 *
 * @module
 */
import { type Endpoint, formatEndpoint } from "../transport.ts";
import { checkPort } from "./args.ts";
import type { ConnectOptions } from "./ports.ts";

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

/** One `host:port`, `[ipv6]:port` or `port`; `null` when malformed. */
export function parseOne(s: string): Endpoint | null {
  const m = /^(?:\[([^\]]+)\]|([^:,\s]*)):(\d+)$/.exec(s) ??
    (/^\d+$/.test(s) ? [s, undefined, "", s] : null);
  if (m === null) return null;
  const port = Number(m[3]);
  checkPort(port);
  return { hostname: m[1] ?? (m[2] || "localhost"), port };
}

/**
 * Parses a list of server addresses: `"h1:9090,h2:9090"` or
 * `["h1:9090", "h2:9090"]` (each `host:port`, `[ipv6]:port` or a port).
 *
 * @throws {TypeError} naming the malformed address; {RangeError} for a bad
 * port.
 */
export function parseServers(list: string | readonly unknown[]): Endpoint[] {
  const whole = typeof list === "string" ? list : list.join(",");
  const items = typeof list === "string" ? list.split(",") : [...list];
  if (items.length === 0) {
    throw new TypeError("connect() was given an empty list of servers");
  }
  const endpoints: Endpoint[] = [];
  for (const item of items) {
    const s = typeof item === "number" ? String(item) : item;
    const ep = typeof s === "string" ? parseOne(s.trim()) : null;
    if (ep === null) {
      const what = typeof s === "string" ? `"${s}"` : String(s);
      const within = items.length > 1 ? ` in "${whole}"` : "";
      throw new TypeError(
        `Invalid address ${what}${within}: expected host:port, [ipv6]:port or a port`,
      );
    }
    endpoints.push(ep);
  }
  return endpoints;
}

/**
 * Parses `connect()`'s address forms: `(port)`, `(host, port)`,
 * `("host:port")`, `("[::1]:port")`, a comma-separated list of these
 * (`"h1:9090,h2:9090"`) or an array of them, each with an optional options
 * object.
 *
 * @throws {TypeError} for a malformed address; {RangeError} for a bad port.
 */
export function parseAddress(
  args: readonly unknown[],
): { endpoints: Endpoint[]; options: ConnectOptions } {
  const rest = [...args];
  let options: ConnectOptions = {};
  const last = rest[rest.length - 1];
  if (typeof last === "object" && last !== null && !Array.isArray(last)) {
    options = last as ConnectOptions;
    rest.pop();
  }
  if (rest.length === 1 && typeof rest[0] === "number") {
    checkPort(rest[0]);
    return { endpoints: [{ hostname: "localhost", port: rest[0] }], options };
  }
  if (
    rest.length === 1 && (typeof rest[0] === "string" || Array.isArray(rest[0]))
  ) {
    return { endpoints: parseServers(rest[0] as string | unknown[]), options };
  }
  if (rest.length === 2 && typeof rest[0] === "string") {
    const port = typeof rest[1] === "string" ? Number(rest[1]) : rest[1];
    checkPort(port);
    return {
      endpoints: [{ hostname: rest[0], port: port as number }],
      options,
    };
  }
  throw new TypeError(
    'connect() takes (port), (host, port), ("host:port"), ("h1:port,h2:port") or (["h1:port", "h2:port"]), then options',
  );
}
