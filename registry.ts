/**
 * The pure registry: roles, semver matching, the per-host port table, waiting
 * gets and the events every change causes. No sockets, timers or runtime
 * checks: each change returns its result and the events it caused, so it is
 * tested in microseconds and could sit behind a replicated store.
 *
 * @module
 */
import semver from "npm:semver@7.8.6";
import { RegistryError } from "./errors.ts";
import { IdTable, PortTable } from "./_tables.ts";
/**
 * The registry's compact indexes (a host's ports, a connection's registrations
 * by id) and the etcd store's (numbers by port), exported for their tests.
 */
export { IdTable, PortSlots, PortTable } from "./_tables.ts";

/** A JSON value, as registration metadata may hold. */
export type JsonValue =
  | string
  | number
  | boolean
  | null
  | JsonValue[]
  | { [key: string]: JsonValue };

/** Extra fields a registration carries besides its address and role. */
export type Meta = { [key: string]: JsonValue };

/**
 * A visible registration: who serves which role where.
 *
 * @example
 * ```ts
 * import type { ServiceRecord } from "./mod.ts";
 * const r: ServiceRecord = {
 *   host: "10.0.0.5",
 *   port: 10003,
 *   role: "web",
 *   version: "1.2.3",
 *   env: "",
 *   id: "k3x-4",
 *   zone: "eu",
 * };
 * console.log(`http://${r.host}:${r.port}`);
 * ```
 */
export interface ServiceRecord {
  /** The host the service listens on, as the server sees its client. */
  readonly host: string;
  /** The port the service listens on. */
  readonly port: number;
  /** The role's name, e.g. `web` for `web@1.2.3`. */
  readonly role: string;
  /** The role's version, e.g. `1.2.3` (`0.0.0` when none was given). */
  readonly version: string;
  /** The environment the registration lives in (`""` by default). */
  readonly env: string;
  /** The server-assigned id of this registration. */
  readonly id: string;
  /** Any metadata given at registration. */
  readonly [key: string]: JsonValue | undefined;
}

/**
 * A record's address as `host:port`, with an IPv6 host in brackets
 * (`[::1]:10000`), ready for a URL or a `connect()`.
 *
 * @example
 * ```ts
 * import { hostPort } from "./mod.ts";
 * console.log(hostPort({ host: "10.0.0.5", port: 10003 })); // "10.0.0.5:10003"
 * console.log(hostPort({ host: "::1", port: 10003 })); // "[::1]:10003"
 * console.log(`http://${hostPort({ host: "::1", port: 80 })}/`); // "http://[::1]:80/"
 * ```
 */
export function hostPort(record: { host: string; port: number }): string {
  return record.host.includes(":")
    ? `[${record.host}]:${record.port}`
    : `${record.host}:${record.port}`;
}

/** The keys of a record that metadata cannot override. */
export const RESERVED_KEYS: ReadonlySet<string> = new Set([
  "host",
  "port",
  "role",
  "version",
  "env",
  "id",
]);

/** The kinds of change a registry reports. */
export type RegistryEventType = "allocate" | "assume" | "free";

/** A change to the set of visible registrations. */
export interface RegistryEvent {
  /** `allocate` (an allocated port became ready), `assume` or `free`. */
  readonly type: RegistryEventType;
  /** The registration concerned. */
  readonly record: ServiceRecord;
  /**
   * On `free`: the registration went not ready (hidden, its port still
   * reserved) rather than freed.
   */
  readonly unready?: true;
}

/** A waiting get that a change satisfied. */
export interface Wakeup<T> {
  /** The token given to {@linkcode Registry.wait}. */
  readonly token: T;
  /** Every visible registration matching the waiter's pattern (frozen). */
  readonly records: readonly ServiceRecord[];
}

/**
 * What took a registration from its holder: another client's `assume` of
 * its port, or an operator's `evict` (`seaport free`).
 *
 * @example
 * ```ts
 * import { connect, type LostReason } from "./mod.ts";
 * const ports = connect(9090);
 * ports.on("lost", (record, reason: LostReason) => {
 *   console.log(`lost ${record.role} on ${record.port}: ${reason}`);
 * });
 * await ports.close();
 * ```
 */
export type LostReason = "assume" | "evict";

/**
 * A registration its holder lost to someone else's change: an `assume` of
 * its port by another owner, or an eviction. The server tells the holder.
 */
export interface Lost {
  /** Who held it (the owner given when it was made). */
  readonly owner: unknown;
  /** The registration, as it was. */
  readonly record: ServiceRecord;
  /** What took it: another owner's `assume` of its port, or an `evict`. */
  readonly reason: LostReason;
}

/** What a change did. */
export interface ChangeResult<T> {
  /** The registration made, when the change made one. */
  readonly record?: ServiceRecord;
  /** The events the change caused, in order. */
  readonly events: RegistryEvent[];
  /** The waiting gets it satisfied (they are removed from the registry). */
  readonly woken: Wakeup<T>[];
  /** Registrations their holders lost to this change, if any. */
  readonly lost?: readonly Lost[];
}

/** A port range, inclusive at both ends. */
export type PortRange = readonly [low: number, high: number];

/**
 * Port ranges by host; `*` is the default for hosts without their own entry.
 */
export type RangeOption = Readonly<Record<string, PortRange>>;

/** The default port range, as the original seaport used. */
export const DEFAULT_RANGE: PortRange = [10000, 20000];

/** The range ports of `host` come from: its own, else `*`'s, else the default. */
export function rangeOf(range: RangeOption, host: string): PortRange {
  return range[host] ?? range["*"] ?? DEFAULT_RANGE;
}

/** A role split into name and version. */
export interface Role {
  /** The name, e.g. `web`. */
  readonly name: string;
  /** The normalised semver version, `0.0.0` when none was given. */
  readonly version: string;
}

/** A pattern split into name and semver range. */
export interface Pattern {
  /** The name to match exactly. */
  readonly name: string;
  /** The range the version must satisfy; `null` matches any version. */
  readonly range: semver.Range | null;
}

// Printable, no "@", no control characters; at most 200 UTF-16 units.
// deno-lint-ignore no-control-regex
const NAME_RE = /^[^@\u0000-\u001f\u007f]{1,200}$/;

function checkName(name: string, what: string, input: string): void {
  if (!NAME_RE.test(name) || name.trim() !== name) {
    throw new RegistryError(
      what === "role" ? "INVALID_ROLE" : "INVALID_PATTERN",
      `Invalid ${what} "${input}": the name must be 1-200 printable characters without "@" or surrounding spaces`,
    );
  }
}

const versionCache = new Map<string, string>();
const CACHE_MAX = 4096;

/** Remembers a parsed value, forgetting everything when the cache is full. */
function remember<V>(cache: Map<string, V>, key: string, value: V): V {
  if (cache.size >= CACHE_MAX) cache.clear();
  cache.set(key, value);
  return value;
}

/**
 * Splits and validates a role `name@version` (version optional). Parsed
 * versions are cached (a cluster has few).
 *
 * @throws {RegistryError} `INVALID_ROLE` for a bad name or version.
 *
 * @example
 * ```ts
 * import { parseRole } from "./mod.ts";
 * console.log(parseRole("web@1.2.3")); // { name: "web", version: "1.2.3" }
 * console.log(parseRole("web")); // { name: "web", version: "0.0.0" }
 * ```
 */
export function parseRole(role: string): Role {
  const at = role.indexOf("@");
  const name = at < 0 ? role : role.slice(0, at);
  checkName(name, "role", role);
  if (at < 0) return { name, version: "0.0.0" };
  const raw = role.slice(at + 1);
  const version = versionCache.get(raw) ?? semver.valid(raw);
  if (version === null) {
    throw new RegistryError(
      "INVALID_ROLE",
      `Invalid role "${role}": "${raw}" is not a semver version such as 1.2.3`,
    );
  }
  if (versionCache.get(raw) === undefined) remember(versionCache, raw, version);
  return { name, version };
}

const patternCache = new Map<string, Pattern>();

/**
 * Splits and validates a pattern `name` or `name@range`, with all of semver's
 * range syntax (`1.2.x`, `^1.2`, `>=1.2`, `~1`, `1.2.3 || 2.x`). Parsed
 * patterns are cached.
 *
 * @throws {RegistryError} `INVALID_PATTERN` for a bad name or range.
 *
 * @example
 * ```ts
 * import { parsePattern } from "./mod.ts";
 * const p = parsePattern("web@^1.2");
 * console.log(p.name, p.range?.test("1.4.0")); // "web" true
 * ```
 */
export function parsePattern(pattern: string): Pattern {
  const cached = patternCache.get(pattern);
  if (cached !== undefined) return cached;
  const at = pattern.indexOf("@");
  const name = at < 0 ? pattern : pattern.slice(0, at);
  checkName(name, "pattern", pattern);
  let range: semver.Range | null = null;
  if (at >= 0) {
    const raw = pattern.slice(at + 1);
    try {
      range = new semver.Range(raw);
    } catch (cause) {
      throw new RegistryError(
        "INVALID_PATTERN",
        `Invalid pattern "${pattern}": "${raw}" is not a semver range`,
        { cause },
      );
    }
    if (range.range === "") range = null; // "*" or "" matches everything
  }
  return remember(patternCache, pattern, { name, range });
}

function matches(p: Pattern, version: string): boolean {
  return p.range === null || p.range.test(version);
}

const SHOWN = 1;
const HIDDEN = 2;
const ASSUMED = 4;
/** The last second `since` holds (4 years of uptime), a small integer × 8. */
const SINCE_MAX = 2 ** 27 - 1;

/**
 * A registration is its record itself: the registry's bookkeeping lives in
 * private fields, which JSON, spreads and property listings never see, so no
 * second object per registration is needed.
 */
class Entry<O, T> {
  [key: string]: JsonValue | undefined;
  host: string;
  port: number;
  role: string;
  version: string;
  env: string;
  id: string;
  readonly #owner: O;
  /**
   * State in one small integer, so that a registration costs one field for
   * it: bit 0 shown (visible), bit 1 hidden (shown once, not ready since: its
   * end is still news), bit 2 assumed (shown by an `assume` event), and from
   * bit 3 on the second it was last shown, counted from the registry's start.
   */
  #bits = 0;
  /** Where it is in its slot's `visible` list while visible. */
  #at = -1;

  constructor(
    host: string,
    port: number,
    role: string,
    version: string,
    env: string,
    id: string,
    owner: O,
  ) {
    this.host = host;
    this.port = port;
    this.role = role;
    this.version = version;
    this.env = env;
    this.id = id;
    this.#owner = owner;
  }

  static owner<O, T>(e: Entry<O, T>): O {
    return e.#owner;
  }
  static shown<O, T>(e: Entry<O, T>): boolean {
    return (e.#bits & SHOWN) !== 0;
  }
  static show<O, T>(
    e: Entry<O, T>,
    kind: "allocate" | "assume",
    since: number,
  ): void {
    const at = Math.min(Math.max(0, since), SINCE_MAX) * 8;
    e.#bits = at | SHOWN | (kind === "assume" ? ASSUMED : 0);
  }
  static assumed<O, T>(e: Entry<O, T>): void {
    e.#bits |= ASSUMED;
  }
  static hidden<O, T>(e: Entry<O, T>): boolean {
    return (e.#bits & HIDDEN) !== 0;
  }
  static since<O, T>(e: Entry<O, T>): number {
    return e.#bits >>> 3;
  }
  static is(v: unknown): v is Entry<unknown, unknown> {
    return typeof v === "object" && v !== null && #bits in v;
  }
  static hide<O, T>(e: Entry<O, T>): void {
    e.#bits = (e.#bits & ~SHOWN) | HIDDEN;
  }
  static kind<O, T>(e: Entry<O, T>): "allocate" | "assume" {
    return (e.#bits & ASSUMED) !== 0 ? "assume" : "allocate";
  }
  static at<O, T>(e: Entry<O, T>): number {
    return e.#at;
  }
  static place<O, T>(e: Entry<O, T>, at: number): void {
    e.#at = at;
  }
}

/**
 * A slot's visible registrations in the order they became visible: an array
 * with holes where registrations went (each knows its place), compacted when
 * half of it is holes. About 18 bytes per registration, against 20–40 for a
 * `Set`.
 */
class Visible<O, T> {
  readonly #list: (Entry<O, T> | undefined)[] = [];
  #size = 0;

  get size(): number {
    return this.#size;
  }

  add(e: Entry<O, T>): void {
    Entry.place(e, this.#list.length);
    this.#list.push(e);
    this.#size++;
  }

  delete(e: Entry<O, T>): void {
    const list = this.#list;
    const at = Entry.at(e);
    if (list[at] !== e) return;
    list[at] = undefined;
    Entry.place(e, -1);
    this.#size--;
    if (this.#size === 0) list.length = 0;
    else if (this.#size * 2 < list.length && list.length > 8) {
      let n = 0;
      for (const x of list) {
        if (x !== undefined) {
          Entry.place(x, n);
          list[n++] = x;
        }
      }
      list.length = n;
    }
  }

  /** The list itself, in order, with holes (`undefined`): read it only. */
  get holey(): readonly (Entry<O, T> | undefined)[] {
    return this.#list;
  }
}

/** Everything about one role name in one environment. */
interface Slot<O, T> {
  readonly key: string;
  /** The interned role name, shared by every record of the slot. */
  readonly name: string;
  /** Visible registrations. */
  readonly visible: Visible<O, T>;
  /** Waiting gets. */
  readonly waiters: Set<Waiter<O, T>>;
  /** Registrations, visible or reserved, that point at this slot. */
  refs: number;
  /**
   * Answers by pattern while `visible` is unchanged: repeated queries and
   * wake-ups return the same (frozen) array, which callers may cache
   * derived forms of (the server caches its JSON).
   */
  memo: Map<string, readonly ServiceRecord[]> | undefined;
}

/** Distinct patterns remembered per role before the memo starts over. */
const MEMO_MAX = 64;
const NONE: readonly ServiceRecord[] = Object.freeze([]);

type HostTable<O, T> = PortTable<Entry<O, T>>;

interface Waiter<O, T> {
  readonly owner: O;
  readonly slot: Slot<O, T>;
  readonly pattern: Pattern;
  readonly token: T;
}

/** Options of a {@linkcode Registry}. */
export interface RegistryOptions {
  /** Port ranges by host, `*` for the rest. Default: 10000-20000 for all. */
  range?: RangeOption;
  /** Makes registration ids; default: a counter. */
  newId?: () => string;
  /** The clock, in ms since the epoch, for {@linkcode Registry.since}. Default: none (0). */
  now?: () => number;
  /**
   * Where in each host's range the first pick is, from 0 (the low end, the
   * default) to just under 1: servers sharing one registry start apart so
   * that their claims seldom collide.
   */
  start?: number;
  /**
   * Milliseconds (by the `now` clock) for which a port that {@linkcode
   * Registry.peek} proposed is passed over by later picks, so that the
   * client it was proposed to can take it: picks use it only when every
   * other free port of the range is held. Default: 0 (not held).
   */
  proposalHold?: number;
  /**
   * Milliseconds (by the `now` clock) for which a freed port is passed over
   * by picks, so that a client whose connection dropped finds its ports
   * free when it comes back, and a port whose process may still be going
   * is not given to another at once: picks use it only when every other
   * free port of the range is held (the one held longest first). Default:
   * 0 (not held).
   */
  reuseDelay?: number;
}

/** What a registration request carries. */
export interface RegistrationInput {
  /** The environment. */
  env: string;
  /** The role, `name@version`. */
  role: string;
  /** The host the service runs on. */
  host: string;
  /** Metadata; reserved keys are ignored. */
  meta?: Meta | undefined;
}

function roleKey(env: string, name: string): string {
  return env + "\u0000" + name;
}

/**
 * Validates a port range option.
 *
 * @throws {RangeError} for a range outside 1-65535 or with low > high.
 */
export function checkRangeOption(range: RangeOption): void {
  for (const [host, r] of Object.entries(range)) {
    const [low, high] = r;
    if (
      !Number.isInteger(low) || !Number.isInteger(high) || low < 1 ||
      high > 65535 || low > high
    ) {
      throw new RangeError(
        `Invalid port range for "${host}": ${low}-${high} (need 1 <= low <= high <= 65535)`,
      );
    }
  }
}

function holdOption(name: string, v: number | undefined): number {
  if (v === undefined) return 0;
  if (typeof v !== "number" || !Number.isFinite(v) || v < 0) {
    throw new RangeError(
      `Option "${name}" must be a number of milliseconds, 0 or more, got ${v}`,
    );
  }
  return v;
}

/**
 * The registry state machine. `O` identifies an owner (a connection), `T` a
 * waiting get. Every method is synchronous and does no I/O.
 */
export class Registry<O, T = unknown> {
  #slots = new Map<string, Slot<O, T>>();
  #byOwner = new Map<O, IdTable<Entry<O, T>>>();
  #hosts = new Map<string, HostTable<O, T>>();
  #waitersByOwner = new Map<O, Map<T, Waiter<O, T>>>();
  #versions = new Map<string, string>();
  #range: RangeOption;
  #newId: () => string;
  #counter = 0;
  #size = 0;
  #now: () => number;
  #start: number;
  #start01: number;
  #proposalHold: number;
  #reuseDelay: number;

  constructor(options: RegistryOptions = {}) {
    this.#range = options.range ?? { "*": DEFAULT_RANGE };
    checkRangeOption(this.#range);
    this.#newId = options.newId ?? (() => (++this.#counter).toString(36));
    this.#now = options.now ?? (() => 0);
    this.#start = this.#now();
    const start = options.start ?? 0;
    if (!(start >= 0 && start < 1)) {
      throw new RangeError(
        `Option "start" must be from 0 to under 1, got ${start}`,
      );
    }
    this.#start01 = start;
    this.#proposalHold = holdOption("proposalHold", options.proposalHold);
    this.#reuseDelay = holdOption("reuseDelay", options.reuseDelay);
  }

  /**
   * When a visible registration was last made visible, in ms since the epoch
   * (to the second, by the `now` option's clock); `undefined` for a record
   * that is not this registry's or not visible.
   */
  since(record: ServiceRecord): number | undefined {
    if (!Entry.is(record) || !Entry.shown(record)) return undefined;
    return this.#start + Entry.since(record) * 1000;
  }

  /** Seconds since the registry's start, as a small integer. */
  #seconds(): number {
    return Math.round((this.#now() - this.#start) / 1000);
  }

  /** The number of registrations, visible or reserved. */
  get size(): number {
    return this.#size;
  }

  /** The number of registrations (visible or reserved) an owner holds. */
  countOf(owner: O): number {
    return this.#byOwner.get(owner)?.size ?? 0;
  }

  /** The number of waiting gets an owner has. */
  waitingOf(owner: O): number {
    return this.#waitersByOwner.get(owner)?.size ?? 0;
  }

  #slot(env: string, name: string): Slot<O, T> {
    const key = roleKey(env, name);
    let slot = this.#slots.get(key);
    if (slot === undefined) {
      slot = {
        key,
        name,
        visible: new Visible(),
        waiters: new Set(),
        refs: 0,
        memo: undefined,
      };
      this.#slots.set(key, slot);
    }
    return slot;
  }

  /**
   * The slot of a registration (which holds it, so it exists): looked up
   * rather than kept in a field, 8 bytes less per registration.
   */
  #slotOf(entry: Entry<O, T>): Slot<O, T> {
    return this.#slots.get(roleKey(entry.env, entry.role))!;
  }

  #release(slot: Slot<O, T>): void {
    if (slot.refs === 0 && slot.waiters.size === 0) {
      this.#slots.delete(slot.key);
    }
  }

  /** One string per distinct version (bounded), so records share them. */
  #version(v: string): string {
    const known = this.#versions.get(v);
    if (known !== undefined) return known;
    if (this.#versions.size < 4096) this.#versions.set(v, v);
    return v;
  }

  #table(host: string): HostTable<O, T> {
    let t = this.#hosts.get(host);
    if (t === undefined) {
      const [low, high] = rangeOf(this.#range, host);
      const cursor = low + Math.floor(this.#start01 * (high - low + 1));
      t = new PortTable(low, high, cursor);
      this.#hosts.set(host, t);
    }
    return t;
  }

  /**
   * The next free port from the cursor on that is not held (just proposed
   * or freed), moving the cursor past it; when every free port is held, the
   * one held longest; `undefined` when none is free.
   */
  #nextFree(
    t: HostTable<O, T>,
    exclude: ReadonlySet<number> | undefined,
    at?: number,
  ): number | undefined {
    const size = t.high - t.low + 1;
    if (t.inRange >= size) return undefined;
    const holding = t.holding;
    const now = holding ? at ?? this.#now() : 0;
    if (holding) t.prune(now);
    let p = t.cursor;
    for (let i = 0; i < size; i++) {
      const next = p === t.high ? t.low : p + 1;
      if (!t.has(p) && !exclude?.has(p) && !(holding && t.heldAt(p, now))) {
        t.cursor = next;
        return p;
      }
      p = next;
    }
    return t.oldestHeld(exclude);
  }

  #pickPort(
    t: HostTable<O, T>,
    host: string,
    role: string,
    exclude: ReadonlySet<number> | undefined,
  ): number {
    const p = this.#nextFree(t, exclude);
    if (p !== undefined) return p;
    throw new RegistryError(
      "RANGE_EXHAUSTED",
      `Cannot allocate a port for "${role}": range ${t.low}-${t.high} on ${host} is exhausted`,
    );
  }

  #insert(
    owner: O,
    input: RegistrationInput,
    { name, version }: Role,
    port: number,
    t: HostTable<O, T>,
    id?: string,
  ): Entry<O, T> {
    const slot = this.#slot(input.env, name);
    const entry = new Entry<O, T>(
      input.host,
      port,
      slot.name,
      this.#version(version),
      input.env,
      id ?? this.#newId(),
      owner,
    );
    if (input.meta !== undefined) {
      const extra = entry as unknown as { [key: string]: JsonValue };
      for (const k of Object.keys(input.meta)) {
        if (!RESERVED_KEYS.has(k)) extra[k] = input.meta[k] as JsonValue;
      }
    }
    slot.refs++;
    this.#size++;
    t.set(port, entry);
    let mine = this.#byOwner.get(owner);
    if (mine === undefined) this.#byOwner.set(owner, mine = new IdTable());
    mine.add(entry);
    return entry;
  }

  #show(
    entry: Entry<O, T>,
    type: "allocate" | "assume",
  ): ChangeResult<T> {
    Entry.show(entry, type, this.#seconds());
    const slot = this.#slotOf(entry);
    slot.visible.add(entry);
    slot.memo = undefined;
    return {
      record: entry,
      events: [{ type, record: entry }],
      woken: this.#wake(slot, entry),
    };
  }

  #wake(slot: Slot<O, T>, entry: Entry<O, T>): Wakeup<T>[] {
    const { waiters } = slot;
    if (waiters.size === 0) return [];
    const woken: Wakeup<T>[] = [];
    for (const w of waiters) {
      if (!matches(w.pattern, entry.version)) continue;
      this.#dropWaiter(w);
      woken.push({ token: w.token, records: this.#match(w.slot, w.pattern) });
    }
    return woken;
  }

  #remove(entry: Entry<O, T>, events: RegistryEvent[]): void {
    const record: ServiceRecord = entry;
    const slot = this.#slotOf(entry);
    this.#size--;
    const t = this.#hosts.get(record.host);
    if (t !== undefined && t.get(record.port) === entry) {
      t.delete(record.port);
      // held back from picks (an assumed port outside the range never is one)
      if (
        this.#reuseDelay > 0 && record.port >= t.low && record.port <= t.high
      ) {
        const now = this.#now();
        t.hold(record.port, "freed", now + this.#reuseDelay, now);
      }
    }
    const mine = this.#byOwner.get(Entry.owner(entry));
    mine?.delete(entry);
    if (mine?.size === 0) this.#byOwner.delete(Entry.owner(entry));
    if (Entry.shown(entry)) {
      slot.visible.delete(entry);
      slot.memo = undefined;
      events.push({ type: "free", record });
    } else if (Entry.hidden(entry)) {
      events.push({ type: "free", record }); // the port, kept until now, goes
    }
    slot.refs--;
    this.#release(slot);
  }

  /**
   * Reserves a port for a role on a host. The reservation is invisible until
   * {@linkcode Registry.ready}. With `port`, reserves that port (or fails with
   * `PORT_TAKEN`); otherwise picks a free port from the host's range,
   * skipping `exclude`.
   *
   * @throws {RegistryError} `INVALID_ROLE`, `RANGE_EXHAUSTED`, `PORT_TAKEN`.
   */
  allocate(
    owner: O,
    input: RegistrationInput,
    options: {
      port?: number | undefined;
      /** Ports not to pick; a `Set` is used as it is. */
      exclude?: Iterable<number> | undefined;
    } = {},
  ): ServiceRecord {
    const role = parseRole(input.role);
    const t = this.#table(input.host);
    let port = options.port;
    if (port === undefined) {
      const ex = options.exclude === undefined ||
          options.exclude instanceof Set
        ? options.exclude as ReadonlySet<number> | undefined
        : new Set(options.exclude);
      port = this.#pickPort(t, input.host, input.role, ex);
    } else if (t.has(port)) {
      throw new RegistryError(
        "PORT_TAKEN",
        `Cannot reserve port ${port} on ${input.host} for "${input.role}": it is held by another registration`,
      );
    }
    return this.#insert(owner, input, role, port, t);
  }

  /**
   * Proposes a free port on `host` without reserving it, or `undefined` when
   * the host's range is full. The pick moves past it, so other allocations
   * take other ports until the range wraps around: a client checks that it
   * can bind the port and then reserves it by number, in one step.
   */
  peek(host: string, exclude?: ReadonlySet<number>): number | undefined {
    const t = this.#table(host);
    const p = this.#nextFree(t, exclude);
    if (p !== undefined && this.#proposalHold > 0) {
      const now = this.#now();
      t.hold(p, "proposed", now + this.#proposalHold, now);
    }
    return p;
  }

  /**
   * Proposes up to `count` distinct free ports on `host`, as many
   * {@linkcode Registry.peek}s would: fewer when fewer are free, or when the
   * picks come round to one already proposed.
   */
  peekMany(host: string, count: number): number[] {
    const t = this.#table(host);
    const hold = this.#proposalHold;
    const now = this.#now(); // one clock read for the batch
    const ports: number[] = [];
    const seen = new Set<number>();
    for (let i = 0; i < count; i++) {
      const p = this.#nextFree(t, undefined, now);
      if (p === undefined || seen.has(p)) break;
      ports.push(p);
      seen.add(p);
      if (hold > 0) t.hold(p, "proposed", now + hold, now);
    }
    return ports;
  }

  /**
   * Who holds `port` on `host`, and whether it is visible: for a store that
   * checks its local view before it writes.
   */
  holder(
    host: string,
    port: number,
  ): { record: ServiceRecord; owner: O; ready: boolean } | undefined {
    const entry = this.#hosts.get(host)?.get(port);
    if (entry === undefined) return undefined;
    return {
      record: entry,
      owner: Entry.owner(entry),
      ready: Entry.shown(entry),
    };
  }

  /**
   * Holds a registration made elsewhere: by another server of a replicated
   * store, or a store's own write once it took effect. The registration has
   * the given `id`; whatever else held `port` on the host is replaced (and
   * freed). Holding the same registration again (same id, owner, role and
   * environment) only changes whether it is visible.
   *
   * @throws {RegistryError} `INVALID_ROLE`.
   */
  hold(
    owner: O,
    input: RegistrationInput,
    id: string,
    port: number,
    state: { ready: boolean; kind: "allocate" | "assume" },
  ): ChangeResult<T> {
    const role = parseRole(input.role);
    const t = this.#table(input.host);
    const events: RegistryEvent[] = [];
    const old = t.get(port);
    if (old !== undefined) {
      if (
        old.id === id && Entry.owner(old) === owner &&
        old.role === role.name && old.version === role.version &&
        old.env === input.env
      ) {
        if (state.ready && !Entry.shown(old)) {
          return this.#show(old, state.kind);
        }
        if (!state.ready && Entry.shown(old)) return this.unready(owner, id);
        return { record: old, events, woken: [] };
      }
      this.#remove(old, events);
    }
    const entry = this.#insert(owner, input, role, port, t, id);
    if (!state.ready) {
      if (state.kind === "assume") Entry.assumed(entry);
      return { record: entry, events, woken: [] };
    }
    const result = this.#show(entry, state.kind);
    events.push(...result.events);
    return { record: entry, events, woken: result.woken };
  }

  /**
   * Makes a reserved (or not-ready) registration visible; fires `allocate`
   * (`assume` for an assumed port that was not ready) and wakes the matching
   * waiting gets. Ready twice is the same as once.
   *
   * @throws {RegistryError} `NOT_FOUND` if the owner holds no such
   * registration.
   */
  ready(owner: O, id: string): ChangeResult<T> {
    const entry = this.#own(owner, id, "mark ready");
    if (Entry.shown(entry)) return { record: entry, events: [], woken: [] };
    return this.#show(entry, Entry.kind(entry));
  }

  /**
   * Hides a visible registration while keeping its port reserved: queries
   * and gets skip it and a `free` event says it went, until
   * {@linkcode Registry.ready} shows it again (a service that crashed, is
   * restarting or failed its health check). Not ready twice is the same as
   * once.
   *
   * @throws {RegistryError} `NOT_FOUND` if the owner holds no such
   * registration.
   */
  unready(owner: O, id: string): ChangeResult<T> {
    const entry = this.#own(owner, id, "mark not ready");
    if (!Entry.shown(entry)) return { record: entry, events: [], woken: [] };
    Entry.hide(entry);
    const slot = this.#slotOf(entry);
    slot.visible.delete(entry);
    slot.memo = undefined;
    return {
      record: entry,
      events: [{ type: "free", record: entry, unready: true }],
      woken: [],
    };
  }

  /** Whether a registration the owner holds is visible. */
  isReady(owner: O, id: string): boolean {
    const entry = this.#byOwner.get(owner)?.get(id);
    return entry !== undefined && Entry.shown(entry);
  }

  /** A registration the owner holds (visible or reserved), by id. */
  recordOf(owner: O, id: string): ServiceRecord | undefined {
    return this.#byOwner.get(owner)?.get(id);
  }

  /** Every registration (visible or reserved) the owner holds. */
  recordsOf(owner: O): readonly ServiceRecord[] {
    return this.#byOwner.get(owner)?.values() ?? NONE;
  }

  #own(owner: O, id: string, what: string): Entry<O, T> {
    const entry = this.#byOwner.get(owner)?.get(id);
    if (entry === undefined) {
      throw new RegistryError(
        "NOT_FOUND",
        `Cannot ${what} "${id}": no such registration on this connection`,
      );
    }
    return entry;
  }

  /**
   * Registers a role on a port the caller already listens on. Whatever held
   * that port on that host is replaced (and freed); the result's `lost`
   * names its holder when that was another owner.
   *
   * @throws {RegistryError} `INVALID_ROLE`.
   */
  assume(
    owner: O,
    input: RegistrationInput,
    port: number,
    options: { ready?: boolean } = {},
  ): ChangeResult<T> {
    const role = parseRole(input.role);
    const t = this.#table(input.host);
    const events: RegistryEvent[] = [];
    const old = t.get(port);
    let lost: Lost[] | undefined;
    if (old !== undefined) {
      const was = Entry.owner(old);
      if (was !== owner) lost = [{ owner: was, record: old, reason: "assume" }];
      this.#remove(old, events);
    }
    const entry = this.#insert(owner, input, role, port, t);
    if (options.ready === false) {
      Entry.assumed(entry); // not ready yet: `ready` shows it as assumed
      return lost
        ? { record: entry, events, woken: [], lost }
        : { record: entry, events, woken: [] };
    }
    const result = this.#show(entry, "assume");
    events.push(...result.events);
    return lost
      ? { record: entry, events, woken: result.woken, lost }
      : { record: entry, events, woken: result.woken };
  }

  /**
   * Frees whatever registration holds `port` on `host`, whoever holds it (an
   * operator's `seaport free`); the result's `lost` names the holder.
   *
   * @throws {RegistryError} `NOT_FOUND` if nothing holds that port.
   */
  evict(host: string, port: number): ChangeResult<T> {
    const entry = this.#hosts.get(host)?.get(port);
    if (entry === undefined) {
      throw new RegistryError(
        "NOT_FOUND",
        `Cannot free port ${port} on ${host}: no registration holds it`,
      );
    }
    const events: RegistryEvent[] = [];
    this.#remove(entry, events);
    const lost = [{
      owner: Entry.owner(entry),
      record: entry,
      reason: "evict" as const,
    }];
    return { record: entry, events, woken: [], lost };
  }

  /**
   * Frees a registration the owner holds, by id or by port (on `host`).
   *
   * @throws {RegistryError} `NOT_FOUND` if the owner holds no such
   * registration.
   */
  free(
    owner: O,
    target: { id: string } | { host: string; port: number },
  ): ChangeResult<T> {
    const entry = "id" in target
      ? this.#byOwner.get(owner)?.get(target.id)
      : this.#hosts.get(target.host)?.get(target.port);
    if (entry === undefined || Entry.owner(entry) !== owner) {
      const what = "id" in target
        ? `"${target.id}"`
        : `port ${target.port} on ${target.host}`;
      throw new RegistryError(
        "NOT_FOUND",
        `Cannot free ${what}: no such registration on this connection`,
      );
    }
    const events: RegistryEvent[] = [];
    this.#remove(entry, events);
    return { record: entry, events, woken: [] }; // its own: nothing lost
  }

  /** Frees everything an owner holds and cancels its waiting gets. */
  dropOwner(owner: O): ChangeResult<T> {
    const events: RegistryEvent[] = [];
    const mine = this.#byOwner.get(owner);
    if (mine !== undefined) {
      this.#byOwner.delete(owner); // at once, not entry by entry
      for (const entry of mine.values()) this.#remove(entry, events);
    }
    const waiting = this.#waitersByOwner.get(owner);
    if (waiting !== undefined) {
      for (const w of [...waiting.values()]) this.#dropWaiter(w);
      this.#waitersByOwner.delete(owner);
    }
    return { events, woken: [] };
  }

  #match(
    slot: Slot<O, T> | undefined,
    p: Pattern,
  ): readonly ServiceRecord[] {
    if (slot === undefined || slot.visible.size === 0) return NONE;
    const memo = slot.memo ??= new Map();
    const key = p.range?.range ?? "*";
    const known = memo.get(key);
    if (known !== undefined) return known;
    const out: ServiceRecord[] = [];
    // Each distinct version is tested once: a role has few versions and many
    // registrations, and semver's test parses the version every time.
    // The last version tested is kept apart: most roles have one, and then
    // no map is made.
    let last: string | undefined;
    let lastOk = false;
    let seen: Map<string, boolean> | undefined;
    for (const e of slot.visible.holey) {
      if (e === undefined) continue;
      const v = e.version;
      let ok: boolean;
      if (v === last) ok = lastOk;
      else {
        if (last !== undefined) (seen ??= new Map()).set(last, lastOk);
        ok = seen?.get(v) ?? matches(p, v);
        last = v;
        lastOk = ok;
      }
      if (ok) out.push(e);
    }
    if (memo.size >= MEMO_MAX) memo.clear();
    memo.set(key, Object.freeze(out));
    return out;
  }

  /**
   * The visible registrations in `env` matching `pattern`; without a pattern,
   * every visible registration in `env` (or in all environments when `env` is
   * `undefined`). The answer is shared and frozen when it names a role in
   * one environment: copy it to change it.
   *
   * @throws {RegistryError} `INVALID_PATTERN`.
   */
  query(
    env: string | undefined,
    pattern?: string,
  ): readonly ServiceRecord[] {
    if (pattern !== undefined && env !== undefined) {
      const p = parsePattern(pattern);
      return this.#match(this.#slots.get(roleKey(env, p.name)), p);
    }
    const p = pattern === undefined ? undefined : parsePattern(pattern);
    const out: ServiceRecord[] = [];
    for (const slot of this.#slots.values()) {
      if (p !== undefined && slot.name !== p.name) continue;
      for (const r of slot.visible.holey) {
        if (r === undefined) continue;
        if (env !== undefined && r.env !== env) break;
        if (p === undefined || matches(p, r.version)) out.push(r);
      }
    }
    return out;
  }

  /**
   * Answers at once if registrations match; otherwise records a waiting get
   * under `token`, woken by a later change, and returns `undefined`.
   *
   * @throws {RegistryError} `INVALID_PATTERN`.
   */
  wait(
    owner: O,
    env: string,
    pattern: string,
    token: T,
  ): readonly ServiceRecord[] | undefined {
    const p = parsePattern(pattern);
    const now = this.#match(this.#slots.get(roleKey(env, p.name)), p);
    if (now.length > 0) return now;
    const slot = this.#slot(env, p.name);
    const w: Waiter<O, T> = { owner, slot, pattern: p, token };
    slot.waiters.add(w);
    let mine = this.#waitersByOwner.get(owner);
    if (mine === undefined) this.#waitersByOwner.set(owner, mine = new Map());
    mine.set(token, w);
    return undefined;
  }

  /** Cancels a waiting get; returns whether it was still waiting. */
  cancelWait(owner: O, token: T): boolean {
    const w = this.#waitersByOwner.get(owner)?.get(token);
    if (w === undefined) return false;
    this.#dropWaiter(w);
    return true;
  }

  #dropWaiter(w: Waiter<O, T>): void {
    w.slot.waiters.delete(w);
    this.#release(w.slot);
    // An owner's map stays while it is empty (it waits again soon, as a
    // client in a loop of gets does); dropOwner() removes it.
    this.#waitersByOwner.get(w.owner)?.delete(w.token);
  }
}
