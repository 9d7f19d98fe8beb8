/**
 * The etcd store: several seaport servers as one registry. Every change is
 * an etcd transaction; each server keeps the same pure {@linkcode Registry}
 * as its local view, fed by a watch, so queries, waiting gets and events stay
 * local.
 *
 * Keys under the prefix `P` (default `/seaport/`): `P/ports/<host>/<port>`
 * holds one registration as JSON (its record, the client's `session`, the
 * `server` that serves it now, `ready` and `kind`), attached to the lease of
 * that server. One lease per server, kept alive every TTL / 3: idle clients
 * cost etcd nothing.
 *
 * - A claim is a txn comparing the key's mod revision with what this server
 *   saw (0: absent), never a read-then-write; a failed compare brings the
 *   key's holder into the view, and an allocation picks again.
 * - Every later write (ready, unready, free, takeover) compares the mod
 *   revision this server last saw: a late write of a server that lost the
 *   key never wins.
 * - Writes go through a {@linkcode WriteBatcher}: those of one event-loop
 *   turn (claims, ready, unready, frees, takeovers) go as one txn of up to
 *   100 compares, several txns in flight, never two writes of one key at
 *   once (so they land in the order asked for).
 * - A successful write is applied to the view at once (a client reads its
 *   own writes); the watch's echo of it is skipped by revision. Its events
 *   (and the gets it wakes) go out when the watch reaches its revision, and
 *   only then is it answered: every server emits every change in etcd's
 *   revision order, its own writes included.
 * - A compacted or broken watch: read the range again at a new revision R,
 *   apply the difference, watch from R + 1.
 *
 * @module
 */
import {
  createEtcdClient,
  type EtcdClient,
  EtcdError,
  type KeyValue,
  type Watch,
  WriteBatcher,
} from "./etcd/mod.ts";
import { ConnectionError, RegistryError, SeaportError } from "../errors.ts";
import {
  type ChangeResult,
  DEFAULT_RANGE,
  type Lost,
  parseRole,
  rangeOf,
  type RangeOption,
  type RegistrationInput,
  Registry,
  type RegistryOptions,
  type ServiceRecord,
} from "../registry.ts";
import type { Store, StoreOwner } from "./mod.ts";
import {
  Local,
  Revisions,
  sameMeta,
  type Stored,
  type Value,
} from "./etcd/_view.ts";

/**
 * Options of the etcd store (`createServer({ etcd })`). Every server of one
 * registry names the same endpoints (or some of them) and prefix, and has
 * the same secret.
 */
export interface EtcdStoreOptions {
  /**
   * The etcd members' client URLs (`http://h:2379` or `https://…`): an array
   * or one comma-separated string.
   */
  endpoints: string | readonly string[];
  /** The key prefix of this registry, so several can share one etcd. Default: `/seaport/`. */
  prefix?: string;
  /** A user to authenticate to etcd as. */
  username?: string;
  /** The user's password. */
  password?: string;
  /** A CA certificate (PEM) to trust for `https://` endpoints. */
  ca?: string;
  /**
   * Seconds the server's lease lives without a keep-alive: registrations of
   * a server that died and of its clients that never come back are freed
   * within it. Default: the server's `timeout`, in seconds.
   */
  leaseTtl?: number;
  /**
   * Milliseconds every etcd request may take, failover included; a write
   * past it fails with `UNAVAILABLE`. Default: 5000.
   */
  requestTimeout?: number;
  /**
   * Milliseconds a change this server made (or read after a failed compare)
   * waits for the watch to deliver it before its events go out and the write
   * is answered anyway: what a watch that delivers nothing (its member
   * stopped) adds to a write's answer. Until then every server emits every
   * change in etcd's revision order. Default: 1000.
   */
  watchWait?: number;
  /**
   * The address (`"host:port"`) clients reach this server at, told to the
   * registry's other servers (under `P/servers/`) and by them to their
   * clients in `hello`'s `servers`. Default: the host the server listens on,
   * or this machine's host name when it listens on every address, and its
   * port.
   */
  address?: string;
}

/** What the server adds to the options. */
export interface EtcdStoreSetup extends RegistryOptions {
  /** The lease TTL when the options give none, in seconds. */
  leaseTtl: number;
  /** The server's lease ended: its registrations are gone from etcd. */
  onLeaseLost: () => void;
}

type Result<T> = ChangeResult<T>;

/**
 * One copy of each string many registrations repeat (sessions, servers,
 * hosts, roles, environments, kinds), so that a view of 100,000 parsed
 * values does not hold 100,000 copies of each. Starts over past `max`
 * strings.
 */
class Strings {
  #pool = new Map<string, string>();
  constructor(readonly max = 10_000) {}
  of(s: string): string {
    const had = this.#pool.get(s);
    if (had !== undefined) return had;
    if (this.#pool.size >= this.max) this.#pool.clear();
    this.#pool.set(s, s);
    return s;
  }
}

function parse(text: string, strings: Strings): Stored | undefined {
  try {
    const v = JSON.parse(text) as Stored;
    if (
      typeof v === "object" && v !== null && typeof v.id === "string" &&
      typeof v.host === "string" && Number.isInteger(v.port) &&
      typeof v.role === "string" && typeof v.env === "string" &&
      typeof v.session === "string" && typeof v.server === "string"
    ) {
      v.session = strings.of(v.session);
      v.server = strings.of(v.server);
      v.host = strings.of(v.host);
      v.role = strings.of(v.role);
      v.env = strings.of(v.env);
      if (typeof v.kind === "string") {
        v.kind = strings.of(v.kind) as Stored["kind"];
      }
      return v;
    }
  } catch {
    // not ours
  }
  return undefined;
}

function merge<T>(
  into: { events: unknown[]; woken: unknown[]; lost?: Lost[] },
  c: Result<T>,
) {
  into.events.push(...c.events);
  into.woken.push(...c.woken);
  if (c.lost !== undefined) (into.lost ??= []).push(...c.lost);
}

/** Adds `by` to the count of `key`, deleting it at 0. */
function count(counts: Map<string, number>, key: string, by: number): void {
  const n = (counts.get(key) ?? 0) + by;
  if (n === 0) counts.delete(key);
  else counts.set(key, n);
}

/** Whether a change has anything to tell the server. */
function telling<T>(c: Result<T>): boolean {
  return c.events.length > 0 || c.woken.length > 0 || c.lost !== undefined;
}

const NOTHING = Object.freeze({ events: [], woken: [] });

/** The default of the `watchWait` option (ms). */
const WATCH_WAIT_MS = 1000;

/** A change the view applied before the watch delivered it. */
interface Ahead<T> {
  /** The revision the watch delivers it at, at the latest. */
  rev: number;
  /**
   * A delete whose own revision is not known (a failed compare found the
   * key gone): the watch's first event of `key` after revision `after` is
   * that delete, and releases it.
   */
  gone?: { key: string; after: number };
  change: Result<T>;
  /** When it was held (performance.now()). */
  since: number;
  done: () => void;
}

/** The registry of several servers, kept in etcd. */
export class EtcdStore<O extends StoreOwner, T> implements Store<O, T> {
  readonly #reg: Registry<O | string, T>;
  readonly #etcd: EtcdClient;
  readonly #ports: string;
  readonly #prefix: string;
  readonly #server: string;
  readonly #newId: () => string;
  readonly #ttl: number;
  readonly #range: RangeOption;
  readonly #onLeaseLost: () => void;
  readonly #watchWait: number;
  #lease = "";
  /** This server's client address once announced, and its key. */
  #address: { value: string; key: string } | undefined;
  /** The live servers' addresses, as last read from `P/servers/`. */
  #servers: readonly string[] = [];
  /** Per key: its revision and holder here (the rest is the registry's). */
  readonly #keys: Revisions;
  #locals = new Map<O, Local>();
  /** Connections that ended: a registration of theirs would outlive them. */
  #ended = new WeakSet<O>();
  #sids = new Map<string, Local>();
  #inflight = new Map<string, Set<number>>();
  /** Keys an operator is freeing through this server now (by count). */
  #evicting = new Map<string, number>();
  /** Keys a local connection is freeing now (by count). */
  #freeing = new Map<string, number>();
  /**
   * Registrations of live local connections deleted by no change of this
   * server, until a keep-alive tells an evict from the end of the lease.
   */
  #deleted: { lease: string; lost: Lost }[] = [];
  #checking = false;
  #retry = new Set<string>();
  /**
   * The newest revision the watch (or a resync) delivered: the view has
   * every change up to it. A key it does not know was deleted since.
   */
  #watched = 0;
  /**
   * Changes the view applied ahead of the watch (this server's own writes,
   * what a failed compare read), their events held until the watch reaches
   * them, so that they go out in revision order.
   */
  #ahead: Ahead<T>[] = [];
  /** The lowest revision in #ahead, and the keys of its deletes (by count). */
  #aheadMin = Infinity;
  #aheadKeys = new Map<string, number>();
  #aheadTimer: ReturnType<typeof setTimeout> | undefined;
  /** Registration ids being written now, and by whom. */
  #writing = new Map<string, Local>();
  /**
   * Ids of new registrations whose write failed without an answer (it may
   * still take effect): freed wherever they turn up.
   */
  #abandoned = new Set<string>();
  /** Strings the parsed values share. */
  readonly #strings = new Strings();
  /** Every write goes through it: the writes of one turn in one txn. */
  readonly #writes: WriteBatcher;
  #onChange: (c: Result<T>) => void = () => {};
  #closed = false;
  #watch: Watch | undefined;
  #loop: Promise<void> | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #tick: Promise<void> | undefined;
  #wake: (() => void) | undefined;
  /** How many times the view was read again after a watch ended. */
  resyncs = 0;
  /** When the watch last delivered something (ms since the epoch). */
  lastHeard = 0;
  /**
   * Whether etcd answered the last lease keep-alive (every TTL / 3), so that
   * new registrations can be written.
   */
  reachable = true;

  constructor(options: EtcdStoreOptions, setup: EtcdStoreSetup) {
    if (typeof options !== "object" || options === null) {
      throw new TypeError(`Option "etcd" must be an object`);
    }
    const prefix = options.prefix ?? "/seaport/";
    if (typeof prefix !== "string" || prefix === "") {
      throw new TypeError(`Option "etcd.prefix" must be a non-empty string`);
    }
    this.#prefix = prefix.endsWith("/") ? prefix : prefix + "/";
    this.#ports = this.#prefix + "ports/";
    const ttl = options.leaseTtl ?? setup.leaseTtl;
    if (!Number.isInteger(ttl) || ttl < 1) {
      throw new RangeError(
        `Option "etcd.leaseTtl" must be a positive integer (seconds), got ${ttl}`,
      );
    }
    this.#ttl = ttl;
    const wait = options.watchWait ?? WATCH_WAIT_MS;
    if (typeof wait !== "number" || !Number.isFinite(wait) || wait < 0) {
      throw new RangeError(
        `Option "etcd.watchWait" must be a number of milliseconds, 0 or more, got ${
          String(options.watchWait)
        }`,
      );
    }
    this.#watchWait = wait;
    this.#etcd = createEtcdClient({
      endpoints: options.endpoints,
      ...(options.requestTimeout !== undefined
        ? { requestTimeout: options.requestTimeout }
        : {}),
      ...(options.username !== undefined ? { username: options.username } : {}),
      ...(options.password !== undefined ? { password: options.password } : {}),
      ...(options.ca !== undefined ? { ca: options.ca } : {}),
    });
    this.#writes = new WriteBatcher(this.#etcd.kv);
    this.#reg = new Registry<O | string, T>({ ...setup, start: Math.random() });
    this.#keys = new Revisions(this.#ports, this.#reg);
    this.#range = setup.range ?? { "*": DEFAULT_RANGE };
    this.#server = this.#strings.of(crypto.randomUUID());
    // Ids unique across servers: a random prefix per server run.
    const run = crypto.randomUUID().slice(0, 8);
    let n = 0;
    this.#newId = () => `${run}-${(++n).toString(36)}`;
    this.#onLeaseLost = setup.onLeaseLost;
  }

  get view(): Registry<O, T> {
    return this.#reg as unknown as Registry<O, T>;
  }

  /** This server's id in etcd. */
  get server(): string {
    return this.#server;
  }

  /**
   * The client addresses of the registry's live servers (this one included,
   * once announced), as read at the last keep-alive: what `hello` tells
   * clients.
   */
  get servers(): readonly string[] {
    return this.#servers;
  }

  /**
   * Tells the registry's other servers that clients reach this one at
   * `address`: a key under `P/servers/` with this server's lease, so it goes
   * when the server does.
   */
  async announce(address: string): Promise<void> {
    this.#address = {
      value: address,
      key: `${this.#prefix}servers/${this.#server}`,
    };
    await this.#putAddress();
    await this.#readServers();
  }

  async #putAddress(): Promise<void> {
    if (this.#address === undefined) return;
    await this.#etcd.kv.put(
      this.#address.key,
      JSON.stringify({ address: this.#address.value, started: Date.now() }),
      { lease: this.#lease },
    );
  }

  async #readServers(): Promise<void> {
    const found = await this.#etcd.kv.get(`${this.#prefix}servers/`, {
      prefix: true,
    });
    const list = new Set<string>();
    for (const kv of found.kvs) {
      try {
        const address = JSON.parse(kv.value).address;
        if (typeof address === "string" && address !== "") list.add(address);
      } catch {
        // not ours: skipped
      }
    }
    this.#servers = [...list].sort();
  }

  async open(onChange: (change: Result<T>) => void): Promise<void> {
    this.#onChange = onChange;
    this.#lease = (await this.#etcd.lease.grant(this.#ttl)).id;
    const rev = await this.#resync();
    let ready: (ok: boolean) => void = () => {};
    const started = new Promise<boolean>((r) => ready = r);
    this.#loop = this.#run(rev, ready);
    await started;
    this.#schedule();
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#reached(Infinity);
    this.#wake?.();
    await this.#tick;
    await this.#watch?.close();
    await this.#loop;
    if (this.#lease !== "") {
      await this.#etcd.lease.revoke(this.#lease).catch(() => {});
    }
    await this.#etcd.close();
  }

  countOf(owner: O): number {
    return this.#locals.get(owner)?.count ?? 0;
  }

  allocate(
    owner: O,
    input: RegistrationInput,
    options: {
      port?: number | undefined;
      exclude?: Iterable<number> | undefined;
      ready?: boolean | undefined;
    },
  ): Promise<Result<T>> {
    parseRole(input.role);
    const st = this.#local(owner);
    const ready = options.ready === true;
    if (options.port !== undefined) {
      return this.#claimPort(st, input, options.port, ready);
    }
    return this.#claimAny(st, input, options.exclude, ready);
  }

  async #claimPort(
    st: Local,
    input: RegistrationInput,
    port: number,
    ready: boolean,
  ): Promise<Result<T>> {
    const key = this.#key(input.host, port);
    const taken = () =>
      new RegistryError(
        "PORT_TAKEN",
        `Cannot reserve port ${port} on ${input.host} for "${input.role}": it is held by another registration`,
      );
    const known = this.#keys.known(key);
    let id: string | undefined;
    if (known?.value !== undefined) {
      // The session's own registration, held through another server (or a
      // connection of it that has not ended yet): take it over.
      if (known.value.session !== st.sid) throw taken();
      id = this.#same(known.value, input) ? known.value.id : undefined;
    }
    const c = await this.#put(
      st,
      key,
      known?.value === undefined ? 0 : known.rev,
      this.#value(st, input, id ?? this.#newId(), port, ready, "allocate"),
    );
    if (c === undefined) throw taken();
    return c;
  }

  async #claimAny(
    st: Local,
    input: RegistrationInput,
    exclude: Iterable<number> | undefined,
    ready: boolean,
  ): Promise<Result<T>> {
    const host = input.host;
    let busy = this.#inflight.get(host);
    if (busy === undefined) this.#inflight.set(host, busy = new Set());
    const [low, high] = rangeOf(this.#range, host);
    for (let attempt = 0;; attempt++) {
      const skip = new Set(busy);
      for (const p of exclude ?? []) skip.add(p);
      const port = this.#reg.peek(host, skip);
      if (port === undefined || attempt > high - low + 100) {
        throw new RegistryError(
          "RANGE_EXHAUSTED",
          `Cannot allocate a port for "${input.role}": range ${low}-${high} on ${host} is exhausted`,
        );
      }
      busy.add(port);
      try {
        const c = await this.#put(
          st,
          this.#key(host, port),
          0,
          this.#value(st, input, this.#newId(), port, ready, "allocate"),
        );
        if (c !== undefined) return c;
      } finally {
        busy.delete(port);
      }
    }
  }

  ready(owner: O, id: string): Result<T> | Promise<Result<T>> {
    return this.#visibility(owner, id, true);
  }

  unready(owner: O, id: string): Result<T> | Promise<Result<T>> {
    return this.#visibility(owner, id, false);
  }

  #visibility(
    owner: O,
    id: string,
    ready: boolean,
  ): Result<T> | Promise<Result<T>> {
    const st = this.#locals.get(owner);
    const key = st && this.#keys.keyOf(st, id);
    const known = key === undefined ? undefined : this.#keys.known(key);
    const what = ready ? "mark ready" : "mark not ready";
    const missing = () =>
      new RegistryError(
        "NOT_FOUND",
        `Cannot ${what} "${id}": no such registration on this connection`,
      );
    if (
      st === undefined || key === undefined || known?.value === undefined ||
      known.value.id !== id
    ) throw missing();
    if (known.value.ready === ready) {
      const h = this.#reg.holder(known.value.host, known.value.port);
      return { ...(h ? { record: h.record } : {}), events: [], woken: [] };
    }
    const value = { ...known.value, ready, server: this.#server };
    return this.#put(st, key, known.rev, value).then((c) => {
      if (c === undefined) throw missing();
      return c;
    });
  }

  async assume(
    owner: O,
    input: RegistrationInput,
    port: number,
    options: { ready?: boolean },
  ): Promise<Result<T>> {
    parseRole(input.role);
    const st = this.#local(owner);
    const key = this.#key(input.host, port);
    for (let attempt = 0; attempt < 10; attempt++) {
      const known = this.#keys.known(key);
      const mine = known?.value !== undefined &&
        known.value.session === st.sid && this.#same(known.value, input);
      const value = this.#value(
        st,
        input,
        mine ? known!.value!.id : this.#newId(),
        port,
        options.ready !== false,
        "assume",
      );
      const c = await this.#put(
        st,
        key,
        known?.value === undefined ? 0 : known.rev,
        value,
      );
      if (c !== undefined) return c;
    }
    throw new SeaportError(
      "STORE",
      `Cannot assume port ${port} on ${input.host}: it kept changing`,
    );
  }

  async evict(host: string, port: number): Promise<Result<T>> {
    const key = this.#key(host, port);
    // the holder, if a connection of this server, is told (the watch may
    // deliver the delete before the answer)
    count(this.#evicting, key, 1);
    try {
      for (let attempt = 0; attempt < 10; attempt++) {
        const known = this.#keys.known(key);
        if (known?.value === undefined) break;
        const c = await this.#delete(key, known.rev);
        if (c !== undefined) return c;
      }
    } finally {
      count(this.#evicting, key, -1);
    }
    throw new RegistryError(
      "NOT_FOUND",
      `Cannot free port ${port} on ${host}: no registration holds it`,
    );
  }

  async free(
    owner: O,
    target: { id: string } | { host: string; port: number },
  ): Promise<Result<T>> {
    const st = this.#locals.get(owner);
    const key = "id" in target
      ? st && this.#keys.keyOf(st, target.id)
      : this.#key(target.host, target.port);
    // held by st: the registry holds its value (no need to derive it)
    const rev = key === undefined || this.#keys.holder(key) !== st
      ? undefined
      : this.#keys.rev(key);
    const missing = () => {
      const what = "id" in target
        ? `"${target.id}"`
        : `port ${target.port} on ${target.host}`;
      return new RegistryError(
        "NOT_FOUND",
        `Cannot free ${what}: no such registration on this connection`,
      );
    };
    if (st === undefined || key === undefined || rev === undefined) {
      throw missing();
    }
    // its own delete, which the watch may deliver before the answer
    count(this.#freeing, key, 1);
    try {
      const c = await this.#delete(key, rev);
      if (c === undefined) throw missing();
      return c;
    } finally {
      count(this.#freeing, key, -1);
    }
  }

  drop(owner: O): Result<T> | Promise<Result<T>> {
    const waits = this.#reg.dropOwner(owner);
    this.#ended.add(owner);
    const st = this.#locals.get(owner);
    if (st === undefined) return waits;
    this.#locals.delete(owner);
    st.dropped = true;
    if (this.#sids.get(st.sid) === st) this.#sids.delete(st.sid);
    if (st.count === 0) return waits;
    const out = { events: [...waits.events], woken: [...waits.woken] };
    return Promise.all(this.#keys.keysOf(st).map((key) => this.#release(key)))
      .then((changes) => {
        for (const c of changes) merge(out, c);
        return out;
      });
  }

  /** Deletes a key of a dropped session; on failure, tries again later. */
  async #release(key: string): Promise<Result<T>> {
    const rev = this.#keys.rev(key);
    if (this.#keys.holder(key)?.dropped !== true || rev === undefined) {
      return NOTHING;
    }
    try {
      return await this.#delete(key, rev) ?? NOTHING;
    } catch {
      this.#retry.add(key);
      return NOTHING;
    }
  }

  #local(owner: O): Local {
    let st = this.#locals.get(owner);
    if (st === undefined) {
      if (this.#ended.has(owner)) {
        throw new ConnectionError("Cannot register: the connection has ended");
      }
      st = new Local(
        this.#strings.of(owner.sid !== "" ? owner.sid : crypto.randomUUID()),
        owner,
      );
      this.#locals.set(owner, st);
      this.#sids.set(st.sid, st);
    }
    return st;
  }

  #key(host: string, port: number): string {
    return this.#keys.key(host, port);
  }

  #same(v: Value, input: RegistrationInput): boolean {
    const role = parseRole(input.role);
    const was = parseRole(v.role);
    return was.name === role.name && was.version === role.version &&
      v.env === input.env && sameMeta(v.meta, input.meta);
  }

  #value(
    st: Local,
    input: RegistrationInput,
    id: string,
    port: number,
    ready: boolean,
    kind: "allocate" | "assume",
  ): Stored {
    const v: Stored = {
      id,
      host: input.host,
      port,
      role: this.#strings.of(input.role),
      env: input.env,
      session: st.sid,
      server: this.#server,
      ready,
      kind,
    };
    if (input.meta !== undefined) v.meta = input.meta;
    return v;
  }

  /**
   * Writes `value` if the key's mod revision is still `seen` (0: absent).
   * Returns the change to the view, or `undefined` when the compare failed
   * (the key's holder is then in the view).
   */
  async #put(
    st: Local,
    key: string,
    seen: number,
    value: Stored,
  ): Promise<Result<T> | undefined> {
    const fresh = this.#keys.idAt(key) !== value.id;
    this.#writing.set(value.id, st);
    let r;
    try {
      r = await this.#writes.write({
        key,
        seen,
        op: "put",
        value: JSON.stringify(value),
        lease: this.#lease,
      });
    } catch (err) {
      // No answer: it may take effect yet. A new registration the client
      // was told failed must not appear: free it wherever it turns up.
      if (fresh) {
        this.#abandoned.add(value.id);
        if (this.#keys.idAt(key) === value.id) this.#ghost(key);
      }
      throw err;
    } finally {
      this.#writing.delete(value.id);
    }
    if (!r.succeeded) {
      this.#learnFailed(key, r.revision, r.kv);
      return undefined;
    }
    return this.#landed(st, key, r.revision, value);
  }

  /** A write of `value` took effect at revision `rev`: the view learns it. */
  async #landed(
    st: Local,
    key: string,
    rev: number,
    value: Stored,
  ): Promise<Result<T>> {
    const learned = this.#learn(key, rev, value, st);
    let record = learned.record;
    if (record === undefined) {
      // The watch delivered it first (and its events went out with it).
      const h = this.#reg.holder(value.host, value.port);
      if (h?.record.id === value.id) record = h.record;
    }
    const c: Result<T> = { ...(record ? { record } : {}), ...NOTHING };
    const held = this.#inOrder(rev, learned);
    if (held !== undefined) await held;
    if (st.dropped) {
      // the session ended while this was in flight
      const out = { events: [...c.events], woken: [...c.woken] };
      merge(out, await this.#release(key));
      return { ...(c.record ? { record: c.record } : {}), ...out };
    }
    return c;
  }

  /** Deletes the key if its mod revision is still `seen`. */
  async #delete(key: string, seen: number): Promise<Result<T> | undefined> {
    const at = this.#keys.held(key) ? this.#keys.where(key) : undefined;
    const before = at && this.#reg.holder(at.host, at.port)?.record;
    const r = await this.#writes.write({ key, seen, op: "delete" });
    if (!r.succeeded) {
      this.#learnFailed(key, r.revision, r.kv);
      return undefined;
    }
    this.#retry.delete(key);
    const c = this.#learn(key, r.revision, undefined);
    const held = this.#inOrder(r.revision, c);
    if (held !== undefined) await held;
    // The watch may have delivered it first (and its events went out with it).
    const record = c.record ?? before;
    return { ...(record !== undefined ? { record } : {}), ...NOTHING };
  }

  /** A compare failed: the view learns what `key` holds at `rev`. */
  #learnFailed(key: string, rev: number, kv: KeyValue | undefined): void {
    if (kv !== undefined) {
      const v = parse(kv.value, this.#strings);
      this.#inOrder(kv.modRevision, this.#learn(key, kv.modRevision, v));
      return;
    }
    // gone: the watch's next event of the key is that delete
    const after = this.#keys.rev(key) ?? 0;
    this.#inOrder(rev, this.#learn(key, rev, undefined), { key, after });
  }

  /**
   * Applies what etcd holds at `key` as of revision `rev` to the view, unless
   * the view already knows a newer state.
   */
  #learn(
    key: string,
    rev: number,
    value: Stored | undefined,
    st?: Local,
  ): Result<T> {
    const known = this.#keys.rev(key);
    if (known !== undefined && known >= rev) return NOTHING;
    // A write's answer that comes after the watch delivered it and a later
    // delete (which made the view forget the key): stale, not applied.
    if (known === undefined && rev < this.#watched) return NOTHING;
    // What the registry holds at the key's port, if anything.
    const prev = this.#keys.held(key) ? this.#keys.where(key) : undefined;
    const was = prev && this.#keys.holder(key);
    this.#keys.setHolder(key, undefined);
    const gone = (): Result<T> => {
      if (prev === undefined) return NOTHING;
      const c = this.#reg.evict(prev.host, prev.port);
      if (was === undefined || was.dropped || this.#freeing.has(key)) {
        return this.#lostTo(c, undefined, undefined, undefined);
      }
      // A live local connection's registration, deleted by an operator
      // (evict) or by the end of this server's lease. Through this server:
      // an evict. Else it is an evict if the lease is still alive.
      if (this.#evicting.has(key)) {
        return this.#lostTo(c, was, c.record, "evict");
      }
      if (c.record !== undefined) this.#unexplained(was, c.record);
      return this.#lostTo(c, undefined, undefined, undefined);
    };
    if (value === undefined) {
      this.#keys.other(key, rev);
      return gone();
    }
    const at = this.#keys.where(key);
    if (at === undefined || at.host !== value.host || at.port !== value.port) {
      // a value no seaport wrote (not at its own key)
      this.#keys.other(key, rev, value);
      return gone();
    }
    // a local connection's registration taken by another session's assume
    const taken = was !== undefined && !was.dropped &&
        value.session !== was.sid && prev !== undefined
      ? this.#reg.holder(prev.host, prev.port)?.record
      : undefined;
    let holder: Local | undefined;
    let ghost = false;
    if (value.server === this.#server) {
      const mine = st ?? this.#writing.get(value.id) ??
        this.#sids.get(value.session);
      if (
        mine !== undefined && !mine.dropped && !this.#abandoned.has(value.id)
      ) {
        holder = mine;
      } else if (st === undefined) {
        // Written by this server for a session that is gone, or a write
        // that failed without an answer and took effect after all: free it.
        ghost = true;
      } else if (st.dropped) {
        // Its answer, for a session that ended meanwhile: held by it, so
        // that #landed frees it.
        holder = st;
      }
    }
    const kind = value.kind ?? "allocate";
    let c: Result<T>;
    try {
      c = this.#reg.hold(
        value.session,
        {
          env: value.env,
          role: value.role,
          host: value.host,
          meta: value.meta,
        },
        value.id,
        value.port,
        { ready: value.ready === true, kind },
      );
    } catch {
      // a value no seaport wrote (a bad role)
      this.#keys.other(key, rev, value);
      return gone();
    }
    this.#keys.hold(key, rev, kind, holder);
    if (ghost) this.#ghost(key, value);
    return taken === undefined ? c : this.#lostTo(c, was, taken, "assume");
  }

  /**
   * A live local connection's registration was deleted through another
   * server: an operator's evict, or the end of this server's lease (then
   * the keep-alive finds the lease gone and drops the connections, whose
   * clients assert their registrations again). One keep-alive tells them
   * apart, for every such delete of a turn; while the lease lives, the
   * holders are told.
   */
  #unexplained(was: Local, record: ServiceRecord): void {
    // the lease its key was written with (a new one may be granted before
    // the check)
    const lost = { owner: was, record, reason: "evict" as const };
    this.#deleted.push({ lease: this.#lease, lost });
    if (this.#checking) return;
    this.#checking = true;
    void (async () => {
      while (this.#deleted.length > 0 && !this.#closed) {
        await Promise.resolve(); // the rest of this turn's deletes
        const deleted = this.#deleted;
        this.#deleted = [];
        const alive = new Map<string, Promise<boolean>>();
        const told: Lost[] = [];
        for (const { lease, lost } of deleted) {
          let check = alive.get(lease);
          if (check === undefined) {
            check = this.#etcd.lease.keepAliveOnce(lease)
              .then(() => true, () => false);
            alive.set(lease, check);
          }
          const st = lost.owner as Local;
          if (await check && !st.dropped) {
            told.push({ ...lost, owner: st.owner });
          }
        }
        if (told.length > 0 && !this.#closed) {
          this.#emit({ events: [], woken: [], lost: told });
        }
      }
      this.#checking = false;
    })();
  }

  /**
   * `c` with the local connection `was` told it lost `record` (when `by`
   * says how), and without the registry's own `lost` (its owners are
   * session ids here, not connections).
   */
  #lostTo(
    c: Result<T>,
    was: Local | undefined,
    record: ServiceRecord | undefined,
    by: Lost["reason"] | undefined,
  ): Result<T> {
    const told = was !== undefined && record !== undefined && by !== undefined;
    if (!told && c.lost === undefined) return c;
    const out: Result<T> = {
      ...(c.record !== undefined ? { record: c.record } : {}),
      events: c.events,
      woken: c.woken,
      ...(told ? { lost: [{ owner: was.owner, record, reason: by }] } : {}),
    };
    return out;
  }

  /** Frees a key this server wrote for no live session, now or later. */
  #ghost(
    key: string,
    value: Value | undefined = this.#keys.known(key)?.value,
  ): void {
    if (value === undefined) return;
    this.#abandoned.delete(value.id);
    const ghost = new Local(value.session, undefined);
    ghost.dropped = true;
    this.#keys.setHolder(key, ghost);
    this.#retry.add(key);
    // try at once; on failure the keep-alive tick tries again
    queueMicrotask(() => {
      if (!this.#closed) this.#release(key).then((c) => this.#emit(c));
    });
  }

  #emit(c: Result<T>): void {
    if (telling(c)) this.#onChange(c);
  }

  /**
   * Emits a change the view applied ahead of the watch in revision order:
   * at once if the watch has delivered `rev` already, else once it delivers
   * `rev` (or, for `gone`, that delete), at most `watchWait` ms later.
   *
   * @returns A promise that resolves once it went out, if it waits.
   */
  #inOrder(
    rev: number,
    c: Result<T>,
    gone?: { key: string; after: number },
  ): Promise<void> | undefined {
    if (!telling(c)) return undefined;
    if (rev <= this.#watched || this.#closed) {
      this.#emit(c);
      return undefined;
    }
    return new Promise((done) => {
      const since = performance.now();
      this.#ahead.push({ rev, change: c, since, done, ...(gone && { gone }) });
      if (gone !== undefined) {
        this.#aheadKeys.set(gone.key, (this.#aheadKeys.get(gone.key) ?? 0) + 1);
      }
      if (rev < this.#aheadMin) this.#aheadMin = rev;
      this.#aheadTimer ??= setTimeout(() => this.#overdue(), this.#watchWait);
    });
  }

  /**
   * The watch delivered everything up to `rev` (and now an event of `key`):
   * emits the changes held for it, in revision order.
   */
  #reached(rev: number, key?: string): void {
    if (this.#ahead.length === 0) return;
    if (
      rev < this.#aheadMin &&
      (key === undefined || !this.#aheadKeys.has(key))
    ) return;
    const out: Ahead<T>[] = [];
    const keep: Ahead<T>[] = [];
    this.#aheadMin = Infinity;
    for (const a of this.#ahead) {
      if (
        a.rev <= rev ||
        (a.gone !== undefined && a.gone.key === key && rev > a.gone.after)
      ) {
        out.push(a);
        if (a.gone === undefined) continue;
        const n = this.#aheadKeys.get(a.gone.key)! - 1;
        if (n === 0) this.#aheadKeys.delete(a.gone.key);
        else this.#aheadKeys.set(a.gone.key, n);
      } else {
        keep.push(a);
        if (a.rev < this.#aheadMin) this.#aheadMin = a.rev;
      }
    }
    this.#ahead = keep;
    if (keep.length === 0) {
      clearTimeout(this.#aheadTimer);
      this.#aheadTimer = undefined;
    }
    // a delete of `key` goes out at `rev`, where the watch delivered it
    out.sort((x, y) => Math.min(x.rev, rev) - Math.min(y.rev, rev));
    for (const a of out) {
      this.#emit(a.change);
      a.done();
    }
  }

  /** Emits the changes held longer than the `watchWait`, in order. */
  #overdue(): void {
    this.#aheadTimer = undefined;
    const now = performance.now();
    let upTo = -Infinity;
    for (const a of this.#ahead) {
      if (now - a.since >= this.#watchWait - 1 && a.rev > upTo) upTo = a.rev;
    }
    this.#reached(upTo);
    if (this.#ahead.length > 0) {
      let oldest = now;
      for (const a of this.#ahead) oldest = Math.min(oldest, a.since);
      this.#aheadTimer = setTimeout(
        () => this.#overdue(),
        Math.max(1, oldest + this.#watchWait - now),
      );
    }
  }

  /**
   * Reads every registration at a new revision and applies the difference to
   * the view (with its events). Returns the revision read.
   */
  async #resync(): Promise<number> {
    const r = await this.#etcd.kv.get(this.#ports, { prefix: true });
    const at = r.header.revision;
    const out = { events: [] as unknown[], woken: [] as unknown[] };
    const present = new Set<string>();
    for (const kv of r.kvs) {
      present.add(kv.key);
      const v = parse(kv.value, this.#strings);
      if (v !== undefined) merge(out, this.#learn(kv.key, kv.modRevision, v));
    }
    for (const [key, rev] of this.#keys.revs()) {
      if (present.has(key) || rev > at) continue;
      merge(out, this.#learn(key, at, undefined));
      this.#keys.forget(key, at);
    }
    if (at > this.#watched) this.#watched = at;
    this.#reached(at);
    this.#emit(out as Result<T>);
    this.lastHeard = Date.now();
    return at;
  }

  /** The watch, from `rev` + 1, read again after every end. */
  async #run(rev: number, started: (ok: boolean) => void): Promise<void> {
    let first = true;
    while (!this.#closed) {
      const w = this.#etcd.watcher.watch(this.#ports, {
        prefix: true,
        startRevision: rev + 1,
      });
      this.#watch = w;
      if (first) {
        first = false;
        w.ready.then(started);
      }
      try {
        for await (const batch of w) {
          this.lastHeard = Date.now();
          for (const ev of batch.events) {
            const key = ev.kv.key;
            const at = ev.kv.modRevision;
            // what the view applied ahead of this event goes out first
            this.#reached(at, key);
            if (ev.type === "put") {
              // this server's own write, learned already: nothing to parse
              if ((this.#keys.rev(key) ?? 0) < at) {
                const v = parse(ev.kv.value, this.#strings);
                if (v !== undefined) this.#emit(this.#learn(key, at, v));
              }
            } else {
              this.#emit(this.#learn(key, at, undefined));
              this.#keys.forget(key, at);
            }
            if (at > this.#watched) this.#watched = at;
          }
          if (batch.progress && batch.header.revision > this.#watched) {
            this.#watched = batch.header.revision;
            this.#reached(this.#watched);
          }
        }
      } catch {
        // ended: read again below
      }
      this.#watch = undefined;
      started(false);
      if (this.#closed) break;
      while (!this.#closed) {
        try {
          rev = await this.#resync();
          this.resyncs++;
          break;
        } catch {
          await this.#sleep(250);
        }
      }
    }
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      function done() {
        clearTimeout(t);
        resolve();
      }
      this.#wake = done;
    });
  }

  #schedule(): void {
    if (this.#closed) return;
    this.#timer = setTimeout(() => {
      this.#tick = this.#keepAlive().finally(() => this.#schedule());
    }, Math.max(100, Math.floor(this.#ttl * 1000 / 3)));
  }

  /** Keeps the lease alive and frees what dropped sessions left. */
  async #keepAlive(): Promise<void> {
    try {
      await this.#etcd.lease.keepAliveOnce(this.#lease);
      this.reachable = true;
    } catch (err) {
      this.reachable = false;
      if (err instanceof EtcdError && err.leaseNotFound && !this.#closed) {
        // Expired (etcd unreachable past the TTL): etcd freed everything
        // this server held. A new lease, and the clients assert again.
        try {
          this.#lease = (await this.#etcd.lease.grant(this.#ttl)).id;
          await this.#putAddress();
          this.#onLeaseLost();
        } catch {
          // next time
        }
      }
      return;
    }
    if (this.#address !== undefined) {
      await this.#readServers().catch(() => {}); // the last list stands
    }
    for (const key of [...this.#retry]) {
      if (this.#closed) return;
      this.#emit(await this.#release(key));
      if (this.#keys.holder(key)?.dropped !== true) this.#retry.delete(key);
    }
  }
}
