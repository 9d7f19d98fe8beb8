/**
 * Port proposals: the server proposes free ports (`peek`), the client checks
 * that it can bind them here, and new registrations ask for them by number,
 * visible in one request (one store write) instead of allocate, probe,
 * ready. Or, for many at once, the host's TCP tables are read first and the
 * registrations are allocated visible at once, passing over the ports in use.
 * The checked proposals kept for registrations to come, the registrations of
 * one turn that wait together for the next ones, and the probe itself.
 *
 * @module
 */
import { MAX_EXCLUDE } from "../protocol.ts";
import type { PortRange } from "../registry.ts";
import type { Transport } from "../transport.ts";
import type { Connection } from "./connection.ts";

/** How long a checked port proposed by `peek` stays good to take, in ms. */
const HINT_TTL = 1000;

/**
 * The most ports in use in the range that a read's registrations pass over
 * (a batch's `exclude`, leaving room for a registration's own); with more,
 * they take proposals.
 */
const MAX_AVOID = MAX_EXCLUDE - 64;

/** The default of the `proposals` option. */
export const DEFAULT_PROPOSALS = 64;

/**
 * What one read of the kernel's socket tables and one test bind are taken
 * to cost, in ms, until measured here: a read walks the kernel's whole
 * socket hash (milliseconds, more with every socket on the host), a bind is
 * about 20 µs. The tables are read for a group of checks only when binding
 * each would cost more, by the averages measured since (a read weighted by
 * {@linkcode READ_WEIGHT}).
 */
const READ_MS = 10;
const BIND_MS = 0.02;
/**
 * A read's time counts this much against binds: it runs off the JavaScript
 * thread, which goes on meanwhile (binds block it). Measured: with a quarter,
 * one client's 10,000 registrations took less time and CPU than with the
 * whole.
 */
const READ_WEIGHT = 0.25;

/** A port the server proposed and this machine could bind when checked. */
interface Proposal {
  readonly port: number;
  readonly epoch: number;
  /** When its check began (`Date.now()`). */
  readonly at: number;
}

/**
 * How a new registration is checked: a proposed port, checked, to ask for
 * by number; the ports of the range in use on this host at a read of its
 * tables that began after it asked, to allocate passing them over
 * (`avoid`); or `undefined`: allocate, then check.
 */
export type Checked = number | readonly number[] | undefined;

/**
 * Gives the new registration `ticket` its check, on the connection it was
 * asked on; says whether it took it (it may have been freed meanwhile).
 */
export type Use<T> = (ticket: T, checked: Checked) => boolean;

/** A new registration waiting to be checked. */
interface Waiting {
  readonly exclude: readonly number[];
  readonly ticket: unknown;
  readonly use: Use<unknown>;
}

/** The checked proposals of this client, and the bind probe. */
export class Proposals {
  #conn: Connection;
  #transport: Transport;
  #probe: boolean;
  /** The most checked proposals kept for registrations to come. */
  #limit: number;
  /**
   * Ports the server proposed (`peek`) and this machine could bind after
   * that, oldest first: each new registration asks for one by number.
   */
  #pool: Proposal[] = [];
  /** The new registrations of this turn waiting for the next proposals. */
  #waiting: Waiting[] = [];
  /** The reads of the tables begun when the last of them asked. */
  #begun = 0;
  #scheduled = false;
  /**
   * Proposals claimed this turn, and how many to keep ahead: as many as the
   * last turn claimed, plus one (none before the first claim, so that a
   * first burst asks for no more than it takes).
   */
  #used = 0;
  #want = 0;
  /** Ports asked for the pool and not yet answered and checked. */
  #asking = 0;
  /** The connection epoch whose server does not know `peek`. */
  #noPeek = -1;
  /** Whether this client allocates ports (and so keeps proposals). */
  #allocates = false;
  /** This process's table reader (`null`: the transport reads none). */
  #reader: Tables | null | undefined;
  /** The ports to pass over from the latest read, for `#avoidOf`. */
  #avoid:
    | { bound: ReadonlySet<number>; range: PortRange; ports: number[] }
    | undefined;

  constructor(
    conn: Connection,
    transport: Transport,
    probe: boolean,
    limit: number,
  ) {
    this.#conn = conn;
    this.#transport = transport;
    this.#probe = probe;
    this.#limit = limit;
  }

  /** This client allocates ports: from now on it keeps proposals ready. */
  wanted(): void {
    this.#allocates = true;
  }

  /**
   * Gets a new registration checked: `use` is called now with a kept
   * proposal or, when none is, at the end of this turn, for every
   * registration waiting together: with the ports in use on this host at a
   * read of its tables that began after they asked (when there are many),
   * or with a proposal of one `peek` round trip, checked; with `undefined`
   * when none can be had (no probe, an older server, none could be bound),
   * to allocate the usual way.
   */
  claim<T>(exclude: readonly number[], ticket: T, use: Use<T>): void {
    const conn = this.#conn;
    if (!this.#probe || !conn.connected || this.#noPeek === conn.epoch) {
      use(ticket, undefined);
      return;
    }
    this.#used++;
    this.#schedule();
    const now = Date.now();
    const pool = this.#pool;
    while (
      pool.length > 0 &&
      (pool[0]!.epoch !== conn.epoch || now - pool[0]!.at > HINT_TTL)
    ) pool.shift();
    const i = pool.findIndex((p) => !exclude.includes(p.port));
    if (i >= 0) {
      const [p] = pool.splice(i, 1);
      if (!use(ticket, p!.port)) pool.unshift(p!);
      return;
    }
    if (conn.peekMax === 0) use(ticket, undefined); // one proposal at a time
    else {
      this.#waiting.push({ exclude, ticket, use: use as Use<unknown> });
      this.#begun = this.#tables()?.begun ?? 0;
    }
  }

  /** Asks for proposals at the end of this turn, if any are wanted. */
  peek(): void {
    this.#schedule();
  }

  #schedule(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    queueMicrotask(() => {
      this.#scheduled = false;
      this.#ask();
    });
  }

  /**
   * Asks the server for proposals: for the registrations waiting, and to
   * keep as many as the last turn took (at most the `proposals` option).
   * The server's pick moves past them, so no other client is about to bind
   * them while they are checked.
   */
  #ask(): void {
    const conn = this.#conn;
    const epoch = conn.epoch;
    const group = this.#waiting;
    this.#waiting = [];
    let fresh = 0;
    for (const p of this.#pool) if (p.epoch === conn.epoch) fresh++;
    const spare = Math.max(0, this.#want - fresh - this.#asking);
    if (this.#used > 0) this.#want = Math.min(this.#limit, this.#used + 1);
    this.#used = 0;
    if (
      !this.#allocates || !this.#probe || !conn.connected ||
      this.#noPeek === conn.epoch
    ) {
      for (const w of group) w.use(w.ticket, undefined);
      return;
    }
    const max = conn.peekMax;
    if (max === 0) {
      // an older server proposes one port at a time: one kept, as before
      for (const w of group) w.use(w.ticket, undefined);
      if (this.#limit > 0 && fresh === 0 && this.#asking === 0) {
        this.#send(1, [], 1);
      }
      return;
    }
    const n = group.length + spare;
    const tables = this.#tables();
    if (tables !== undefined && tables.worthReading(group.length)) {
      // one read that begins now, after they asked, then allocations
      void tables.read(this.#begun).then((bound) => {
        if (!conn.connected || conn.epoch !== epoch) return; // re-asserted
        const avoid = this.#avoidOf(bound);
        if (avoid === undefined) return this.#send(n, group, max);
        for (const w of group) w.use(w.ticket, avoid);
        if (spare > 0) this.#send(spare, [], max);
      });
      return;
    }
    if (n > 0) this.#send(n, group, max);
  }

  /**
   * The table reader of this process, when the probe reads tables for
   * this connection: Linux, and a server that says its range.
   */
  #tables(): Tables | undefined {
    if (this.#conn.range === undefined) return undefined;
    if (this.#reader === undefined) {
      const read = this.#transport.boundPorts;
      this.#reader = read === undefined ? null : tablesOf(read);
    }
    return this.#reader ?? undefined;
  }

  /**
   * The ports of the range in use at a read (`bound`), to pass over; none
   * when there was no read, or when there are too many to send.
   */
  #avoidOf(bound: ReadonlySet<number> | undefined): number[] | undefined {
    const range = this.#conn.range;
    if (bound === undefined || range === undefined) return undefined;
    let last = this.#avoid;
    if (last?.bound !== bound || last.range !== range) {
      const ports: number[] = [];
      for (const p of bound) if (p >= range[0] && p <= range[1]) ports.push(p);
      this.#avoid = last = { bound, range, ports };
    }
    return last.ports.length <= MAX_AVOID ? last.ports : undefined;
  }

  /**
   * Sends `peek`s for `n` ports (`max` a request at most, one without a
   * `count` when `max` is 1), checks the ports together once all are
   * answered, and gives them to `group` in order; the rest are kept.
   */
  #send(
    n: number,
    group: Waiting[],
    max: number,
  ): void {
    const conn = this.#conn;
    const epoch = conn.epoch;
    const spare = n - group.length;
    this.#asking += spare;
    const replies: unknown[] = [];
    let left = Math.ceil(n / max);
    const end = () => {
      if (--left === 0) void this.#answered(epoch, spare, group, replies);
    };
    for (let k = 0; k < n; k += max) {
      const count = Math.min(max, n - k);
      conn.requests.transmit({
        body: max === 1 ? { op: "peek" } : { op: "peek", count },
        retry: false,
        onDrop: end, // the reconnect asserts the group again
        resolve: (result) => {
          replies.push(result);
          end();
        },
        reject: () => {
          this.#noPeek = epoch; // a server from before `peek`
          end();
        },
      });
    }
  }

  /** Checks the proposed ports, gives them to `group`, keeps the rest. */
  async #answered(
    epoch: number,
    spare: number,
    group: Waiting[],
    replies: unknown[],
  ): Promise<void> {
    const conn = this.#conn;
    // each port once: the server's picks come round again in a range with
    // fewer free ports than were asked for
    const seen = new Set<number>();
    const add = (p: unknown) => {
      if (Number.isInteger(p) && (p as number) > 0 && (p as number) < 65536) {
        seen.add(p as number);
      }
    };
    for (const r of replies) {
      const { port, ports } = (r ?? {}) as { port?: unknown; ports?: unknown };
      add(port);
      if (Array.isArray(ports)) { for (const p of ports) add(p); }
    }
    const proposed = [...seen];
    const at = Date.now();
    const ok = await this.#canBind(proposed);
    this.#asking -= spare;
    const live = conn.epoch === epoch && conn.connected;
    const good = live ? proposed.filter((_, i) => ok[i]) : [];
    let next = 0;
    const kept: number[] = [];
    for (const w of group) {
      let port: number | undefined;
      while (next < good.length && port === undefined) {
        const p = good[next++]!;
        if (w.exclude.includes(p)) kept.push(p);
        else port = p;
      }
      if (!live) continue; // the reconnect asserts them again
      if (!w.use(w.ticket, port) && port !== undefined) kept.push(port);
    }
    for (; next < good.length; next++) kept.push(good[next]!);
    for (const port of kept) {
      if (this.#pool.length >= this.#limit) break;
      this.#pool.push({ port, epoch, at });
    }
  }

  /**
   * Whether `port` can be bound on this machine now. The checks asked for in
   * one turn, by every client of the process, are made together: when there
   * are so many (the ports of a `batch`'s reply, or of a `peek` for many)
   * that binding each would take longer, by one read of the host's TCP
   * sockets, and a port that any socket uses (listening, connected or
   * closing) is refused; otherwise, and where the tables cannot be read, by
   * a test bind each. A check asked for while a read is under way waits for
   * the next one, so every port is checked after the server reserved or
   * proposed it.
   */
  canBind(port: number): Promise<boolean> {
    return this.#canBind([port]).then((ok) => ok[0]!);
  }

  /** {@linkcode canBind} for each of `ports`, checked together. */
  #canBind(ports: readonly number[]): Promise<boolean[]> {
    const read = this.#transport.boundPorts;
    if (read === undefined) return bindChecks(this.#transport, ports);
    return tablesOf(read).check(this.#transport, ports);
  }
}

/** The table reader of this process for the transport function `read`. */
function tablesOf(
  read: () => Promise<ReadonlySet<number> | undefined>,
): Tables {
  let tables = shared.get(read);
  if (tables === undefined) shared.set(read, tables = new Tables(read));
  return tables;
}

/**
 * The reads of the kernel's tables of one process: the one under way, how
 * many have begun, and the checks waiting for the next.
 */
class Tables {
  #read: () => Promise<ReadonlySet<number> | undefined>;
  /** Groups of ports to check, and how many ports they hold. */
  #waiting: {
    transport: Transport;
    ports: readonly number[];
    done: (ok: boolean[]) => void;
  }[] = [];
  #count = 0;
  #scheduled = false;
  #checking = false;
  /** How many reads have begun. */
  #begun = 0;
  /** The read under way, and its number (`#begun` when it began). */
  #inflight:
    | { n: number; bound: Promise<ReadonlySet<number> | undefined> }
    | undefined;
  /** The kernel's tables cannot be read here: every check binds. */
  #unreadable = false;
  /** Running averages of a read of the tables and of a bind, in ms. */
  #readMs = READ_MS;
  #bindMs = BIND_MS;

  constructor(read: () => Promise<ReadonlySet<number> | undefined>) {
    this.#read = read;
  }

  /** How many reads have begun: a later read began after this was read. */
  get begun(): number {
    return this.#begun;
  }

  /** Whether one read costs less than a test bind of each of `n` ports. */
  worthReading(n: number): boolean {
    return !this.#unreadable && n * this.#bindMs > this.#readMs * READ_WEIGHT;
  }

  /**
   * The ports in use now, by a read that begins after `begun` was what
   * {@linkcode begun} said: the read under way when it did, or a new one;
   * `undefined` where the tables cannot be read.
   */
  read(begun: number): Promise<ReadonlySet<number> | undefined> {
    if (this.#unreadable) return Promise.resolve(undefined);
    const now = this.#inflight;
    return now !== undefined && now.n > begun ? now.bound : this.#readNow();
  }

  #readNow(): Promise<ReadonlySet<number> | undefined> {
    const t0 = performance.now();
    const reading = {
      n: ++this.#begun,
      bound: this.#read().catch(() => undefined).then((bound) => {
        if (this.#inflight === reading) this.#inflight = undefined;
        this.#readMs = average(this.#readMs, performance.now() - t0);
        if (bound === undefined) this.#unreadable = true;
        return bound;
      }),
    };
    this.#inflight = reading;
    return reading.bound;
  }

  check(transport: Transport, ports: readonly number[]): Promise<boolean[]> {
    if (this.#unreadable) return bindChecks(transport, ports);
    return new Promise((done) => {
      this.#waiting.push({ transport, ports, done });
      this.#count += ports.length;
      this.#schedule();
    });
  }

  #schedule(): void {
    if (this.#scheduled || this.#checking) return;
    this.#scheduled = true;
    queueMicrotask(() => {
      this.#scheduled = false;
      void this.#check();
    });
  }

  /**
   * Checks the ports waiting: by a read that begins now (after the server
   * proposed or reserved them: a read under way began before), or a bind
   * each.
   */
  async #check(): Promise<void> {
    this.#checking = true;
    await this.#inflight?.bound;
    const group = this.#waiting;
    const n = this.#count;
    this.#waiting = [];
    this.#count = 0;
    const bound = this.worthReading(n) ? await this.#readNow() : undefined;
    if (bound !== undefined) {
      for (const { ports, done } of group) {
        done(ports.map((port) => !bound.has(port)));
      }
    } else {
      const t0 = performance.now();
      for (const { transport, ports, done } of group) {
        done(await bindChecks(transport, ports));
      }
      this.#bindMs = average(this.#bindMs, (performance.now() - t0) / n);
    }
    this.#checking = false;
    if (this.#waiting.length > 0) this.#schedule();
  }
}

/** A running average that follows changes within a few samples. */
function average(avg: number, sample: number): number {
  return avg + (sample - avg) / 4;
}

/** Every process's table reader, by the transport function that reads. */
const shared = new WeakMap<
  () => Promise<ReadonlySet<number> | undefined>,
  Tables
>();

/** Whether a test bind of each port on every address succeeds now. */
async function bindChecks(
  transport: Transport,
  ports: readonly number[],
): Promise<boolean[]> {
  const ok: boolean[] = [];
  for (const port of ports) ok.push(await bindCheck(transport, port));
  return ok;
}

/** Whether a test bind of `port` on every address succeeds now. */
async function bindCheck(transport: Transport, port: number): Promise<boolean> {
  try {
    const l = await transport.listen({ hostname: "0.0.0.0", port });
    l.close();
    return true;
  } catch {
    return false;
  }
}
