/**
 * The seaport client: connects through the transport, speaks the wire
 * protocol, keeps a map of pending requests, queues calls while the
 * connection is down, reconnects with capped exponential backoff and full
 * jitter, and re-asserts `service()` and `assume()` registrations after every
 * reconnect.
 *
 * @module
 */
import { Emitter } from "./_emitter.ts";
import { answer, importSecret, type SecretKey } from "./_auth.ts";
import { Outbox } from "./_outbox.ts";
import { Servers } from "./client/servers.ts";
import {
  AbortError,
  AuthError,
  ConnectionError,
  errorFromWire,
  ProtocolError,
  RegistryError,
  TimeoutError,
} from "./errors.ts";
import {
  DEFAULT_MAX_LINE_BYTES,
  encodeRequest,
  LINE_TOO_LONG,
  LineSplitter,
  parseServerMessage,
  PROTOCOL_VERSION,
  type Request,
  type ServerMessage,
} from "./protocol.ts";
import {
  type JsonValue,
  type Meta,
  parsePattern,
  parseRole,
  type ServiceRecord,
} from "./registry.ts";
import {
  type Conn,
  defaultTransport,
  type Endpoint,
  formatEndpoint,
  type TlsClientOptions,
  type Transport,
} from "./transport.ts";

/**
 * Options of {@linkcode connect}.
 *
 * @example
 * ```ts
 * import { connect } from "./mod.ts";
 * const ports = connect("127.0.0.1", 9090, {
 *   secret: "beep boop",
 *   advertise: "10.0.0.5", // register under this host
 *   maxReconnectDelay: 500,
 * });
 * await ports.close();
 * ```
 */
export interface ConnectOptions {
  /** The shared secret, when the server requires one. */
  secret?: string;
  /**
   * The host to register services under, instead of the address the server
   * sees (for containers and NAT).
   */
  advertise?: string;
  /** The environment; `seaport(env).connect()` sets it. Default: `""`. */
  env?: string;
  /** Milliseconds before the first reconnect attempt, at most. Default: 100. */
  reconnectDelay?: number;
  /** The cap of the exponential reconnect backoff, in ms. Default: 1000. */
  maxReconnectDelay?: number;
  /** Milliseconds one connection attempt may take. Default: 5000. */
  connectTimeout?: number;
  /** The longest line accepted from the server, in bytes. Default: 65536. */
  maxLineBytes?: number;
  /**
   * Heartbeat interval in ms. Default: what the server asks for (3000 on a
   * default server).
   */
  heartbeat?: number;
  /**
   * Milliseconds without a word from the server after which the connection is
   * taken for dead and reconnected. Default: the server's timeout (10000).
   */
  timeout?: number;
  /**
   * Check that an allocated port can be bound on this machine before taking
   * it, and ask for another if not (a port held by a process seaport does not
   * know of). Turn off when services run elsewhere than the client. Default:
   * `true`.
   */
  probe?: boolean;
  /** Connect with TLS: `true` for the system's roots, or CA certificates. */
  tls?: boolean | TlsClientOptions;
  /**
   * Try the servers given to `connect()` in a random order, which spreads
   * clients over them; `false` tries them in the order given (the first is
   * the primary). Servers that a server announces join after them either
   * way. Default: `true`.
   */
  shuffle?: boolean;
  /** The transport to connect with. Default: the runtime's own. */
  transport?: Transport;
}

/**
 * What {@linkcode Ports.query} asks for, in its options form.
 *
 * @example
 * ```ts
 * import { connect, createServer } from "./mod.ts";
 * const server = createServer();
 * const { port } = await server.listen(0, "127.0.0.1");
 * const ports = connect("127.0.0.1", port);
 * console.log(await ports.query({ pattern: "web@1.x", all: true })); // []
 * await ports.close();
 * await server.close();
 * ```
 */
export interface QueryOptions {
  /** `name` or `name@range`; every registration without one. */
  pattern?: string;
  /** The environment; default: the client's. */
  env?: string;
  /** Every environment (overrides `env`). */
  all?: boolean;
  /**
   * Add `since` to each record: when it was last made visible, in ms since
   * the epoch (to the second).
   */
  since?: boolean;
}

/**
 * Options of a waiting {@linkcode Ports.get}.
 *
 * @example
 * ```ts
 * import { connect, createServer, TimeoutError } from "./mod.ts";
 * const server = createServer();
 * const { port } = await server.listen(0, "127.0.0.1");
 * const ports = connect("127.0.0.1", port);
 * try {
 *   await ports.get("db@2", { timeout: 100 });
 * } catch (err) {
 *   console.log(err instanceof TimeoutError); // true
 * }
 * await ports.close();
 * await server.close();
 * ```
 */
export interface GetOptions {
  /**
   * Gives up waiting when aborted, rejecting with an `AbortError` (a
   * `TimeoutError` for `AbortSignal.timeout()`) whose `cause` is the
   * signal's reason.
   */
  signal?: AbortSignal;
  /** Gives up after this many ms, rejecting with a `TimeoutError`. */
  timeout?: number;
}

/**
 * `cb(port, ready)` of `service()` and `allocate()`.
 *
 * @example
 * ```ts
 * import type { ServiceCallback } from "./mod.ts";
 * const start: ServiceCallback = (port, ready) => {
 *   console.log(`listening on ${port}`);
 *   ready(); // now others can get() it
 * };
 * ```
 */
export type ServiceCallback = (
  port: number,
  ready: () => Promise<void>,
) => void;

/**
 * Listeners of {@linkcode Ports} events.
 *
 * @example
 * ```ts
 * import { connect } from "./mod.ts";
 * const ports = connect(9090);
 * ports.on("allocate", (r) => console.log("up:", r.role, r.host, r.port));
 * ports.on("free", (r) => console.log("down:", r.role, r.host, r.port));
 * ports.on("disconnect", () => console.log("lost the registry; reconnecting"));
 * await ports.close();
 * ```
 */
export interface PortsEvents {
  /** An allocated port became ready somewhere (server event). */
  allocate: (record: ServiceRecord, unready: boolean) => void;
  /** A service assumed a port somewhere (server event). */
  assume: (record: ServiceRecord, unready: boolean) => void;
  /**
   * A registration was freed somewhere, or went not ready (`unready`: hidden,
   * its port still reserved) (server event).
   */
  free: (record: ServiceRecord, unready: boolean) => void;
  /**
   * The event subscription was made, or made again after a reconnect: every
   * visible registration in the listener's scope now. The events that follow
   * are the changes after it, so a listener that keeps a map of the registry
   * sees what changed while it was away by comparing (server event).
   */
  resync: (records: ServiceRecord[]) => void;
  /** The connection is up and authenticated. */
  connect: () => void;
  /** The connection was lost; the client reconnects. */
  disconnect: (err?: unknown) => void;
  /** Something failed that no returned Promise reports. */
  error: (err: unknown) => void;
}

/**
 * Which environment's server events a listener receives: by default the
 * client's own (as queries answer); `env` names another, `all` takes every
 * environment.
 *
 * @example
 * ```ts
 * import { connect } from "./mod.ts";
 * const ports = connect(9090);
 * ports.on("allocate", (r) => console.log(r.env, r.role), { all: true });
 * ports.on("free", (r) => console.log("prod lost", r.role), { env: "prod" });
 * await ports.close();
 * ```
 */
export interface EventScope {
  /** The environment to follow. Default: the client's. */
  env?: string;
  /** Every environment (overrides `env`). */
  all?: boolean;
}

/**
 * A connection to a seaport server. Create one with {@linkcode connect}.
 *
 * @example
 * ```ts
 * import { connect, createServer } from "./mod.ts";
 * const server = createServer();
 * const { port } = await server.listen(0, "127.0.0.1");
 * await using ports = connect("127.0.0.1", port);
 * const web = await ports.service("web@1.2.3", { zone: "eu" });
 * const [found] = await ports.get("web@^1.2");
 * console.log(found!.port === web, found!.zone); // true "eu"
 * await ports.free(web);
 * await server.close();
 * ```
 */
export interface Ports extends AsyncDisposable {
  /**
   * Registers a service: allocates a port, calls `cb(port, ready)`, and makes
   * the registration visible when `ready()` is called (at once when `cb`
   * takes one argument or is left out). Re-asserted after every reconnect.
   *
   * @returns The port; when ready is automatic, once the registration is
   * visible.
   */
  service(role: string, cb?: ServiceCallback): Promise<number>;
  /** {@inheritDoc Ports.service} */
  service(role: string, meta: Meta, cb?: ServiceCallback): Promise<number>;
  /**
   * Allocates a port for a role, like `service()` but not re-asserted after a
   * reconnect (the registration ends with the connection that made it).
   */
  allocate(role: string, cb?: ServiceCallback): Promise<number>;
  /** {@inheritDoc Ports.allocate} */
  allocate(role: string, meta: Meta, cb?: ServiceCallback): Promise<number>;
  /**
   * Tells the server this client serves `role` on `port` (or `meta.port`);
   * replaces whatever held that port on this host. Re-asserted after every
   * reconnect.
   */
  assume(
    role: string,
    port: number | (Meta & { port: number }),
    cb?: (record: ServiceRecord) => void,
  ): Promise<ServiceRecord>;
  /**
   * Makes this client's registration on `port` visible (again): what the
   * `ready` of `service()`'s callback does, and the way back from
   * {@linkcode Ports.unready}. Resolves once the server shows it.
   *
   * @throws {RegistryError} `NOT_FOUND` if this client holds nothing there.
   */
  ready(port: number): Promise<void>;
  /**
   * Hides this client's registration on `port` while keeping the port
   * reserved: queries and gets skip it and subscribers see a `free` event
   * (with `unready` true), until {@linkcode Ports.ready}. For a service that
   * crashed, is restarting or failed a health check. Kept across reconnects.
   *
   * @throws {RegistryError} `NOT_FOUND` if this client holds nothing there.
   */
  unready(port: number): Promise<void>;
  /** Gives a registration back, by port or by record. */
  free(port: number | ServiceRecord, cb?: () => void): Promise<void>;
  /**
   * Frees whatever registration holds `port` on `host`, whoever holds it: an
   * operator's tool (`seaport free`). A connected holder is not told.
   *
   * @returns The freed record.
   * @throws {RegistryError} `NOT_FOUND` when nothing holds that port.
   */
  evict(host: string, port: number): Promise<ServiceRecord>;
  /**
   * The registrations matching `pattern` now (all in the environment without
   * a pattern), in this client's environment or in `env`.
   */
  query(cb?: (records: ServiceRecord[]) => void): Promise<ServiceRecord[]>;
  /** {@inheritDoc Ports.query} */
  query(
    pattern: string,
    cb?: (records: ServiceRecord[]) => void,
  ): Promise<ServiceRecord[]>;
  /** {@inheritDoc Ports.query} */
  query(
    options: QueryOptions,
    cb?: (records: ServiceRecord[]) => void,
  ): Promise<ServiceRecord[]>;
  /** {@inheritDoc Ports.query} */
  query(
    env: string,
    pattern: string | undefined,
    cb?: (records: ServiceRecord[]) => void,
  ): Promise<ServiceRecord[]>;
  /**
   * The registrations matching `pattern`, once at least one exists: waits
   * (across reconnects) until one registers.
   */
  get(
    pattern: string,
    cb?: (records: ServiceRecord[]) => void,
  ): Promise<ServiceRecord[]>;
  /** {@inheritDoc Ports.get} */
  get(
    pattern: string,
    options: GetOptions,
    cb?: (records: ServiceRecord[]) => void,
  ): Promise<ServiceRecord[]>;
  /**
   * Adds an event listener; server events are subscribed on first use and
   * come from the client's environment unless `scope` says otherwise.
   */
  on<K extends keyof PortsEvents>(
    event: K,
    fn: PortsEvents[K],
    scope?: EventScope,
  ): this;
  /** Removes an event listener. */
  off<K extends keyof PortsEvents>(event: K, fn: PortsEvents[K]): this;
  /** Whether the connection is up and authenticated. */
  readonly connected: boolean;
  /** This client's address as the server sees it, once connected. */
  readonly host: string | undefined;
  /** Ends the connection and cancels pending calls; frees registrations. */
  close(): Promise<void>;
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K>
  : never;
type Body = DistributiveOmit<Request, "id">;

interface Pending {
  readonly body: Body;
  readonly resolve: (v: JsonValue) => void;
  readonly reject: (err: unknown) => void;
  /** On a lost connection: send again after reconnecting, or drop. */
  readonly retry: boolean;
  /** Called instead of a rejection when a non-retried request is dropped. */
  readonly onDrop?: () => void;
  id?: number;
}

interface LocalService {
  readonly role: string;
  readonly meta: Meta | undefined;
  readonly persistent: boolean;
  port: number | undefined;
  rid: string | undefined;
  epoch: number;
  wantReady: boolean;
  visible: boolean;
  onPort: ((port: number) => void) | undefined;
  onFail: (err: unknown) => void;
  /** Rejects the caller's promise if it is still pending; reports nothing. */
  cancel: (err: unknown) => void;
  readyWaiters: (() => void)[];
  exclude: number[];
  /** Ready as soon as allocated (no `ready` argument in the callback). */
  auto: boolean;
  /** Made by `assume()`: re-asserted with `assume`, ready or not. */
  assumed: boolean;
  /** The record of the last (re-)assertion. */
  record: ServiceRecord | undefined;
}

/** Allocations whose port cannot be bound are retried this often at most. */
const MAX_PROBES = 32;

/** How long a checked port proposed by `peek` stays good to take, in ms. */
const HINT_TTL = 1000;

const SERVER_EVENTS = new Set(["allocate", "assume", "free", "resync"]);

function positive(name: string, v: number | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== "number" || !(v > 0) || !Number.isFinite(v)) {
    throw new RangeError(
      `Option "${name}" must be a positive number, got ${v}`,
    );
  }
  return v;
}

class Client implements Ports {
  #servers: Servers;
  /**
   * This client's session id, the same across reconnects and servers: a
   * server of a registry on a shared store takes over what the session held.
   */
  #session = newSessionId();
  #opts: ConnectOptions;
  #transport: Transport;
  #emitter = new Emitter<PortsEvents>((err) => this.#reportError(err));
  #key: Promise<SecretKey> | undefined;
  #state: "connecting" | "handshake" | "ready" | "closed" = "connecting";
  #conn: Conn | undefined;
  #outbox: Outbox | undefined;
  #epoch = 0;
  #nextId = 1;
  #pending = new Map<number, Pending>();
  #queue: Pending[] = [];
  #services = new Set<LocalService>();
  #subscribed = false;
  /** Whether some listener follows another environment than the client's. */
  #subscribedAll = false;
  /** Server-event listeners as given → as added (filtered by environment). */
  #scoped = new Map<string, Map<unknown, (...args: never[]) => void>>();
  #host: string | undefined;
  #sleep:
    | { timer: ReturnType<typeof setTimeout>; wake: () => void }
    | undefined;
  #run: Promise<void>;
  #closing: Promise<never>;
  #abort: (err: unknown) => void = () => {};
  #lastHeard = 0;
  #ticker: ReturnType<typeof setInterval> | undefined;
  #tls: TlsClientOptions | undefined;
  #limits: { min: number; max: number; connect: number; line: number };
  /**
   * A port the server proposed (`peek`) and this machine could bind when it
   * was proposed: the next new registration asks for it by number, in one
   * round trip instead of allocate, probe, ready.
   */
  #hint: { port: number; epoch: number; at: number } | undefined;
  #peeking = false;
  /** The connection epoch whose server does not know `peek`. */
  #noPeek = -1;
  /** Whether this client allocates ports (and so keeps a hint). */
  #allocates = false;

  constructor(endpoints: readonly Endpoint[], opts: ConnectOptions) {
    this.#opts = opts;
    if (opts.shuffle !== undefined && typeof opts.shuffle !== "boolean") {
      throw new TypeError(`Option "shuffle" must be a boolean`);
    }
    this.#servers = new Servers(endpoints, { shuffle: opts.shuffle ?? true });
    this.#transport = opts.transport ?? defaultTransport();
    if (opts.secret !== undefined && typeof opts.secret !== "string") {
      throw new TypeError(`Option "secret" must be a string`);
    }
    if (opts.env !== undefined && typeof opts.env !== "string") {
      throw new TypeError(`Option "env" must be a string`);
    }
    this.#key = opts.secret === undefined
      ? undefined
      : importSecret(opts.secret);
    this.#tls = opts.tls === true ? {} : opts.tls || undefined;
    this.#limits = {
      min: positive("reconnectDelay", opts.reconnectDelay, 100),
      max: positive("maxReconnectDelay", opts.maxReconnectDelay, 1000),
      connect: positive("connectTimeout", opts.connectTimeout, 5000),
      line: positive("maxLineBytes", opts.maxLineBytes, DEFAULT_MAX_LINE_BYTES),
    };
    this.#closing = new Promise<never>((_, reject) => this.#abort = reject);
    this.#closing.catch(() => {});
    this.#run = this.#loop();
  }

  #closed(): boolean {
    return this.#state === "closed";
  }

  get connected(): boolean {
    return this.#state === "ready";
  }

  get host(): string | undefined {
    return this.#host;
  }

  // ---- connection life cycle ----

  async #loop(): Promise<void> {
    let attempt = 0;
    while (!this.#closed()) {
      const server = this.#servers.next();
      let conn: Conn;
      try {
        conn = await this.#open(server.endpoint);
      } catch (err) {
        if (this.#closed()) break;
        this.#servers.failed();
        this.#emitter.emit("disconnect", err);
        await this.#backoff(attempt++);
        continue;
      }
      if (this.#closed()) {
        conn.close();
        break;
      }
      const reading = this.#read(conn);
      let failed: unknown = undefined;
      try {
        await this.#handshakeOn(reading);
        attempt = 0;
        this.#servers.succeeded();
        this.#up();
      } catch (err) {
        conn.close();
        failed = err;
        this.#servers.failed();
        if (err instanceof AuthError) {
          await reading;
          this.#fail(err);
          break;
        }
      }
      const lost = await reading;
      this.#down();
      if (this.#closed()) break;
      this.#emitter.emit("disconnect", lost ?? failed);
      await this.#backoff(attempt++);
    }
  }

  /**
   * The handshake, failed when the connection ends before it completes or
   * when it takes longer than the connect timeout (a server that accepts and
   * never answers, or answers and hangs up, as a full server does).
   */
  async #handshakeOn(reading: Promise<unknown>): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const where = this.#where();
    const ended = reading.then((reason) => {
      throw reason ?? new ConnectionError(
        `The server at ${where} closed the connection during the handshake`,
      );
    });
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new TimeoutError(
              `The server at ${where} did not complete the handshake within ${this.#limits.connect} ms`,
            ),
          ),
        this.#limits.connect,
      );
    });
    const handshake = this.#handshake();
    handshake.catch(() => {});
    ended.catch(() => {});
    try {
      await Promise.race([handshake, ended, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** The server connected to or being tried, as `host:port`. */
  #where(): string {
    return this.#servers.current?.key ?? "";
  }

  async #open(ep: Endpoint): Promise<Conn> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const attempt = this.#transport.connect(ep, this.#tls);
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        reject(
          new TimeoutError(
            `Connecting to ${
              formatEndpoint(ep)
            } took longer than ${this.#limits.connect} ms`,
          ),
        );
      }, this.#limits.connect);
    });
    try {
      let conn: Conn;
      try {
        conn = await Promise.race([attempt, timeout, this.#closing]);
      } catch (err) {
        attempt.then((c) => c.close(), () => {}); // arrives late: not used
        throw err;
      }
      if (this.#closed()) return conn; // the caller closes it
      this.#epoch++;
      this.#conn = conn;
      this.#outbox = new Outbox(conn, 64 << 20, () => conn.close());
      this.#state = "handshake";
      return conn;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Reads until the connection ends; resolves with the reason, if any. */
  async #read(conn: Conn): Promise<unknown> {
    const splitter = new LineSplitter(this.#limits.line);

    let reason: unknown = undefined;
    const onLine = (line: string | typeof LINE_TOO_LONG) => {
      if (line === LINE_TOO_LONG) {
        this.#reportError(
          new ConnectionError("The server sent a line over the length limit"),
        );
        return;
      }
      const msg = parseServerMessage(line);
      if (msg === undefined) {
        this.#reportError(
          new ConnectionError(`The server sent an invalid message`),
        );
        return;
      }
      this.#message(msg);
    };
    try {
      while (true) {
        const chunk = await conn.read();
        if (chunk === null) break;
        this.#lastHeard = Date.now();
        splitter.push(chunk, onLine);
      }
    } catch (err) {
      reason = err;
    } finally {
      conn.close();
    }
    return reason;
  }

  #message(msg: ServerMessage): void {
    if ("ev" in msg) {
      this.#emitter.emit(msg.ev, msg.record, msg.unready === true);
      return;
    }
    if (msg.id === null) {
      if ("error" in msg) this.#reportError(errorFromWire(msg.error));
      return;
    }
    const p = this.#pending.get(msg.id);
    if (p === undefined) return; // a cancelled get answered meanwhile
    this.#pending.delete(msg.id);
    if ("error" in msg) p.reject(errorFromWire(msg.error));
    else p.resolve(msg.result);
  }

  async #handshake(): Promise<void> {
    const hello: Body = {
      op: "hello",
      v: PROTOCOL_VERSION,
      session: this.#session,
    };
    if (this.#opts.env) (hello as { env?: string }).env = this.#opts.env;
    if (this.#opts.advertise !== undefined) {
      (hello as { advertise?: string }).advertise = this.#opts.advertise;
    }
    const res = await this.#direct(hello) as {
      host?: string;
      auth?: { nonce?: string } | null;
      heartbeat?: number;
      timeout?: number;
      servers?: unknown;
    };
    this.#host = res.host;
    if (res.servers !== undefined) this.#learn(res.servers);
    this.#beat(res.heartbeat, res.timeout);
    if (res.auth) {
      if (this.#key === undefined) {
        throw new AuthError(
          `The server at ${this.#where()} requires a secret and none was given`,
        );
      }
      const mac = await answer(await this.#key, String(res.auth.nonce));
      try {
        await this.#direct({ op: "auth", mac });
      } catch (err) {
        if (err instanceof AuthError) {
          throw new AuthError(
            `The server at ${this.#where()} rejected the secret`,
            { cause: err },
          );
        }
        throw err;
      }
    }
  }

  /**
   * Adds the servers a `hello` reply announces to the pool (the registry's
   * live servers), to fail over to; an invalid entry is reported and skipped.
   */
  #learn(servers: unknown): void {
    const list = Array.isArray(servers) ? servers : [servers];
    const endpoints: Endpoint[] = [];
    for (const item of list) {
      let ep: Endpoint | null = null;
      try {
        if (typeof item === "string") ep = parseOne(item);
      } catch {
        // a bad port: reported below
      }
      if (ep === null) {
        this.#reportError(
          new ProtocolError(
            "PROTOCOL",
            `The server at ${this.#where()} announced an invalid server address ${
              JSON.stringify(item)?.slice(0, 80)
            }`,
          ),
        );
      } else endpoints.push(ep);
    }
    this.#servers.announced(endpoints);
  }

  /** Sends a request now, bypassing the queue (handshake only). */
  #direct(body: Body): Promise<JsonValue> {
    return new Promise((resolve, reject) => {
      this.#transmit({ body, resolve, reject, retry: false });
    });
  }

  #transmit(p: Pending): void {
    const id = this.#nextId++;
    p.id = id;
    this.#pending.set(id, p);
    this.#outbox!.send(encodeRequest(id, p.body));
  }

  /**
   * Sends a ping every heartbeat and closes the connection when the server has
   * been silent for longer than the timeout (a dead or stopped server).
   */
  #beat(serverBeat: number | undefined, serverTimeout: number | undefined) {
    clearInterval(this.#ticker);
    const num = (v: unknown, d: number) =>
      typeof v === "number" && v > 0 ? v : d;
    const beat = Math.min(
      num(this.#opts.heartbeat, Infinity),
      num(serverBeat, 3000),
    );
    const timeout = num(this.#opts.timeout, num(serverTimeout, 10_000));
    const conn = this.#conn;
    this.#ticker = setInterval(() => {
      if (this.#conn !== conn) return;
      if (Date.now() - this.#lastHeard > timeout) {
        conn?.close();
        return;
      }
      this.#transmit({
        body: { op: "ping" },
        retry: false,
        onDrop: () => {},
        resolve: () => {},
        reject: () => {},
      });
    }, Math.min(beat, timeout / 2));
  }

  #up(): void {
    this.#state = "ready";
    // subscribed first: what a connect listener asks is answered after it
    if (this.#subscribed) this.#subscribe();
    this.#emitter.emit("connect");
    for (const svc of this.#services) this.#assert(svc);
    const queue = this.#queue;
    this.#queue = [];
    for (const p of queue) this.#transmit(p);
    this.#peek();
  }

  #down(): void {
    clearInterval(this.#ticker);
    this.#ticker = undefined;
    if (!this.#closed()) this.#state = "connecting";
    this.#conn = undefined;
    this.#outbox = undefined;
    const lost = new ConnectionError("The connection to the server was lost");
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    const again: Pending[] = [];
    for (const p of pending) {
      if (p.retry && !this.#closed()) again.push(p);
      else if (p.onDrop !== undefined) p.onDrop();
      else p.reject(lost);
    }
    this.#queue = again.concat(this.#queue);
    for (const svc of this.#services) {
      svc.visible = false;
      if (!svc.persistent && svc.port !== undefined) {
        this.#services.delete(svc);
        const ended = new ConnectionError(
          `The registration of "${svc.role}" on port ${svc.port} ended with the connection`,
        );
        svc.cancel(ended); // allocate() not yet visible: its promise rejects
        svc.onFail(ended);
      }
    }
  }

  #backoff(attempt: number): Promise<void> {
    if (this.#closed()) return Promise.resolve();
    const cap = Math.min(this.#limits.max, this.#limits.min * 2 ** attempt);
    const delay = Math.random() * cap;
    return new Promise((resolve) => {
      const wake = () => {
        this.#sleep = undefined;
        resolve();
      };
      this.#sleep = { timer: setTimeout(wake, delay), wake };
    });
  }

  #fail(err: unknown): void {
    this.#state = "closed";
    clearInterval(this.#ticker);
    this.#reject(err);
    this.#reportError(err);
  }

  #reject(err: unknown): void {
    const all = [...this.#pending.values(), ...this.#queue];
    this.#pending.clear();
    this.#queue = [];
    for (const p of all) p.reject(err);
    for (const svc of this.#services) svc.cancel(err);
    this.#services.clear();
  }

  #reportError(err: unknown): void {
    if (this.#emitter.count("error") > 0) this.#emitter.emit("error", err);
  }

  async close(): Promise<void> {
    if (!this.#closed()) {
      this.#state = "closed";
      clearInterval(this.#ticker);
      this.#abort(new ConnectionError("The client was closed", {}, "CLOSED"));
      this.#conn?.close();
      if (this.#sleep !== undefined) {
        clearTimeout(this.#sleep.timer);
        this.#sleep.wake();
      }
      this.#reject(new ConnectionError("The client was closed", {}, "CLOSED"));
    }
    await this.#run;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  // ---- requests ----

  #request(body: Body, retry = true): Promise<JsonValue> {
    if (this.#closed()) {
      return Promise.reject(
        new ConnectionError("The client is closed", {}, "CLOSED"),
      );
    }
    return new Promise((resolve, reject) => {
      const p: Pending = { body, resolve, reject, retry };
      if (this.#state === "ready") this.#transmit(p);
      else this.#queue.push(p);
    });
  }

  /** Sends what a local registration needs now; nothing while disconnected. */
  #assert(svc: LocalService): void {
    if (this.#state !== "ready") return;
    const fresh = svc.port === undefined && this.#opts.probe !== false;
    this.#send(svc, fresh ? this.#takeHint(svc) : undefined);
  }

  #send(svc: LocalService, hint: number | undefined): void {
    const epoch = this.#epoch;
    const probe = this.#opts.probe !== false;
    const fresh = svc.port === undefined;
    // Without a probe still to make, an automatic ready rides along with the
    // allocation.
    const now = svc.auto && (!probe || hint !== undefined);
    const body: {
      op: "allocate" | "assume";
      role: string;
      port?: number;
      meta?: Meta;
      exclude?: number[];
      ready?: boolean;
    } = { op: "allocate", role: svc.role };
    if (hint !== undefined) body.port = hint;
    else if (!fresh) {
      body.port = svc.port!;
      if (svc.wantReady) body.op = "assume";
      else if (svc.assumed) {
        body.op = "assume"; // kept, but not ready
        body.ready = false;
      }
    }
    if (svc.meta !== undefined) body.meta = svc.meta;
    if (fresh && hint === undefined && svc.exclude.length > 0) {
      body.exclude = svc.exclude;
    }
    if (now && body.op === "allocate") body.ready = true;
    this.#transmit({
      body: body as Body,
      retry: false,
      onDrop: () => {},
      resolve: async (result) => {
        if (
          fresh && probe && hint === undefined && this.#services.has(svc) &&
          !(await this.#canBind((result as { port: number }).port))
        ) {
          if (this.#epoch !== epoch || !this.connected) return; // re-asserted
          this.#probeFailed(svc, result as unknown as ServiceRecord);
          return;
        }
        // the connection was lost while probing: reconnecting asserts it again
        if (this.#epoch !== epoch || !this.connected) return;
        if (!this.#services.has(svc)) {
          // freed while the request was in flight
          const rid = (result as { id: string }).id;
          this.#transmit({
            body: { op: "free", rid },
            retry: false,
            onDrop: () => {},
            resolve: () => {},
            reject: () => {},
          });
          return;
        }
        const record = result as unknown as ServiceRecord;
        svc.rid = record.id;
        svc.epoch = epoch;
        svc.record = record;
        const shown = body.op === "assume"
          ? body.ready !== false
          : body.ready === true;
        if (shown) {
          if (svc.auto || svc.wantReady) {
            svc.wantReady = true;
            this.#visible(svc);
          } else this.#sendUnready(svc); // unready() was called meanwhile
        } else if (svc.wantReady) {
          this.#sendReady(svc);
        }
        if (svc.port === undefined) {
          svc.port = record.port;
          svc.onPort?.(record.port);
          svc.onPort = undefined;
        }
      },
      reject: (err) => {
        if (
          hint !== undefined && err instanceof RegistryError &&
          err.code === "PORT_TAKEN" && this.#services.has(svc)
        ) {
          // taken meanwhile by another client on this host: the usual way
          svc.exclude.push(hint);
          this.#assert(svc);
          return;
        }
        this.#services.delete(svc);
        if (this.#closed()) svc.cancel(err);
        else svc.onFail(err);
      },
    });
    // the next proposal, answered along with this allocation
    if (fresh) this.#peek();
  }

  /** The checked port to ask for, when there is a fresh one; used once. */
  #takeHint(svc: LocalService): number | undefined {
    const h = this.#hint;
    this.#hint = undefined;
    if (
      h === undefined || h.epoch !== this.#epoch ||
      Date.now() - h.at > HINT_TTL || svc.exclude.includes(h.port)
    ) return undefined;
    return h.port;
  }

  /**
   * Asks the server to propose a port and checks at once that it can be
   * bound here (the server's pick has just moved past it, so no other client
   * is about to bind it), so that the next new registration asks for it by
   * number in one round trip.
   */
  #peek(): void {
    if (
      this.#peeking || this.#hint !== undefined || !this.#allocates ||
      this.#state !== "ready" || this.#opts.probe === false ||
      this.#noPeek === this.#epoch
    ) return;
    this.#peeking = true;
    const epoch = this.#epoch;
    this.#transmit({
      body: { op: "peek" },
      retry: false,
      onDrop: () => this.#peeking = false,
      resolve: async (result) => {
        const port = (result as { port?: unknown } | null)?.port;
        if (
          typeof port === "number" && await this.#canBind(port) &&
          this.#epoch === epoch && this.connected
        ) this.#hint = { port, epoch, at: Date.now() };
        this.#peeking = false;
      },
      reject: () => {
        this.#peeking = false;
        this.#noPeek = epoch; // a server from before `peek`
      },
    });
  }

  /** Whether `port` can be bound on this machine now. */
  async #canBind(port: number): Promise<boolean> {
    try {
      const l = await this.#transport.listen({ hostname: "0.0.0.0", port });
      l.close();
      return true;
    } catch {
      return false;
    }
  }

  /** Gives back a port that cannot be bound and asks for another. */
  #probeFailed(svc: LocalService, record: ServiceRecord): void {
    this.#transmit({
      body: { op: "free", rid: record.id },
      retry: false,
      onDrop: () => {},
      resolve: () => {},
      reject: () => {},
    });
    svc.exclude.push(record.port);
    if (svc.exclude.length >= MAX_PROBES) {
      this.#services.delete(svc);
      svc.onFail(
        new RegistryError(
          "RANGE_EXHAUSTED",
          `Cannot allocate a port for "${svc.role}": ${svc.exclude.length} ports in a row were taken on this machine (${
            svc.exclude.slice(0, 5).join(", ")
          }, …)`,
        ),
      );
      return;
    }
    this.#assert(svc);
  }

  #visible(svc: LocalService): void {
    if (!svc.wantReady) return; // unready() was called meanwhile
    svc.visible = true;
    const waiters = svc.readyWaiters;
    svc.readyWaiters = [];
    for (const w of waiters) w();
  }

  #sendReady(svc: LocalService): void {
    if (!this.#current(svc)) return;
    this.#transmit({
      body: { op: "ready", rid: svc.rid! },
      retry: false,
      onDrop: () => {},
      resolve: () => this.#visible(svc),
      reject: (err) => this.#reportError(err),
    });
  }

  /** Hides a registration; done at once when it is not on the server now. */
  #sendUnready(svc: LocalService): Promise<void> {
    if (!this.#current(svc)) return Promise.resolve();
    return new Promise((resolve) => {
      this.#transmit({
        body: { op: "unready", rid: svc.rid! },
        retry: false,
        onDrop: resolve, // the re-assertion keeps it hidden
        resolve: () => resolve(),
        reject: (err) => {
          this.#reportError(err);
          resolve();
        },
      });
    });
  }

  /** Whether the server holds `svc` on the connection that is up now. */
  #current(svc: LocalService): boolean {
    return this.#state === "ready" && svc.rid !== undefined &&
      svc.epoch === this.#epoch;
  }

  /** Asks for `svc` to be visible; resolves once it is. */
  #makeReady(svc: LocalService): Promise<void> {
    if (svc.visible) return Promise.resolve();
    const done = new Promise<void>((res) => svc.readyWaiters.push(res));
    if (!svc.wantReady) {
      svc.wantReady = true;
      this.#sendReady(svc);
    }
    return done;
  }

  /** The local registration on `port`. */
  #holding(port: number, what: string): LocalService {
    checkPort(port);
    for (const svc of this.#services) if (svc.port === port) return svc;
    throw new RegistryError(
      "NOT_FOUND",
      `Cannot mark port ${port} ${what}: this client holds no registration on it`,
    );
  }

  ready(port: number): Promise<void> {
    try {
      return this.#makeReady(this.#holding(port, "ready"));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  unready(port: number): Promise<void> {
    let svc: LocalService;
    try {
      svc = this.#holding(port, "not ready");
    } catch (err) {
      return Promise.reject(err);
    }
    svc.auto = false;
    svc.wantReady = false;
    svc.visible = false;
    return this.#sendUnready(svc);
  }

  #register(
    persistent: boolean,
    role: string,
    metaOrCb: Meta | ServiceCallback | undefined,
    maybeCb: ServiceCallback | undefined,
  ): Promise<number> {
    const cb = typeof metaOrCb === "function" ? metaOrCb : maybeCb;
    const meta = typeof metaOrCb === "function" ? undefined : metaOrCb;
    const promise = new Promise<number>((resolve, reject) => {
      checkRole(role);
      checkMeta(meta);
      if (cb !== undefined && typeof cb !== "function") {
        throw new TypeError("The callback must be a function");
      }
      if (this.#closed()) {
        throw new ConnectionError("The client is closed", {}, "CLOSED");
      }
      const auto = cb === undefined || cb.length < 2;
      const svc: LocalService = {
        role,
        meta,
        persistent,
        port: undefined,
        rid: undefined,
        epoch: 0,
        wantReady: false,
        visible: false,
        readyWaiters: [],
        onFail: reject,
        cancel: reject,
        onPort: undefined,
        exclude: [],
        auto,
        assumed: false,
        record: undefined,
      };
      const ready = (): Promise<void> => this.#makeReady(svc);
      svc.onPort = (port) => {
        svc.onFail = (err) => this.#reportError(err);
        try {
          if (cb !== undefined) {
            if (auto) (cb as (port: number) => void)(port);
            else cb(port, ready);
          }
        } catch (err) {
          this.#reportError(err);
        }
        if (!auto || svc.visible) resolve(port);
        else ready().then(() => resolve(port));
      };
      this.#allocates = true;
      this.#services.add(svc);
      this.#assert(svc);
    });
    return cb === undefined ? promise : this.#handled(promise);
  }

  /** With a callback, failures go to the `error` event, not unhandled. */
  #handled<T>(p: Promise<T>): Promise<T> {
    p.catch((err) => this.#reportError(err));
    return p;
  }

  service(
    role: string,
    metaOrCb?: Meta | ServiceCallback,
    cb?: ServiceCallback,
  ): Promise<number> {
    return this.#register(true, role, metaOrCb, cb);
  }

  allocate(
    role: string,
    metaOrCb?: Meta | ServiceCallback,
    cb?: ServiceCallback,
  ): Promise<number> {
    return this.#register(false, role, metaOrCb, cb);
  }

  assume(
    role: string,
    portOrMeta: number | (Meta & { port: number }),
    cb?: (record: ServiceRecord) => void,
  ): Promise<ServiceRecord> {
    const promise = new Promise<ServiceRecord>((resolve, reject) => {
      checkRole(role);
      let port: number;
      let meta: Meta | undefined;
      if (typeof portOrMeta === "number") {
        port = portOrMeta;
      } else {
        checkMeta(portOrMeta);
        const { port: p, ...rest } = portOrMeta as Meta;
        port = p as number;
        meta = rest;
      }
      checkPort(port);
      if (this.#closed()) {
        throw new ConnectionError("The client is closed", {}, "CLOSED");
      }
      for (const old of this.#services) {
        if (old.port === port) this.#services.delete(old);
      }
      const svc: LocalService = {
        role,
        meta,
        persistent: true,
        port,
        rid: undefined,
        epoch: 0,
        wantReady: true,
        visible: false,
        readyWaiters: [() => resolve(svc.record!)],
        onFail: reject,
        cancel: reject,
        onPort: undefined,
        exclude: [],
        auto: false,
        assumed: true,
        record: undefined,
      };
      this.#services.add(svc);
      this.#assert(svc);
    });
    return this.#withCallback(promise, cb);
  }

  free(target: number | ServiceRecord, cb?: () => void): Promise<void> {
    const promise = (async () => {
      let svc: LocalService | undefined;
      if (typeof target === "number") {
        checkPort(target);
        for (const s of this.#services) if (s.port === target) svc = s;
      } else if (typeof target === "object" && target !== null) {
        for (const s of this.#services) if (s.rid === target.id) svc = s;
      } else {
        throw new TypeError("free() takes a port number or a record");
      }
      if (svc !== undefined) {
        this.#services.delete(svc);
        svc.cancel(new ConnectionError(`"${svc.role}" was freed`));
        if (
          svc.rid === undefined || svc.epoch !== this.#epoch ||
          this.#state !== "ready"
        ) return; // the server forgets it with the lost connection
        // the server forgot it with the connection it was made on
        await this.#request({ op: "free", rid: svc.rid }, false).catch(
          (err) => {
            if (!(err instanceof ConnectionError)) throw err;
          },
        );
        return;
      }
      const body: Body = typeof target === "number"
        ? { op: "free", port: target }
        : { op: "free", rid: String(target.id) };
      await this.#request(body, false);
    })().then(() => cb?.());
    return cb === undefined ? promise : this.#handled(promise);
  }

  evict(host: string, port: number): Promise<ServiceRecord> {
    try {
      if (typeof host !== "string" || host === "") {
        throw new TypeError("evict() takes a host name or address");
      }
      checkPort(port);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#request({ op: "evict", host, port }, false) as Promise<
      never
    >;
  }

  query(
    a?: string | QueryOptions | ((records: ServiceRecord[]) => void),
    b?: string | ((records: ServiceRecord[]) => void),
    c?: (records: ServiceRecord[]) => void,
  ): Promise<ServiceRecord[]> {
    const args = [a, b, c].filter((x) => x !== undefined);
    const cb = typeof args[args.length - 1] === "function"
      ? args.pop() as (records: ServiceRecord[]) => void
      : undefined;
    const promise = new Promise<ServiceRecord[]>((resolve, reject) => {
      let opts: QueryOptions;
      if (args.length === 1 && typeof args[0] === "object" && args[0]) {
        opts = args[0] as QueryOptions;
      } else if (args.every((x) => typeof x === "string")) {
        opts = args.length === 2
          ? { env: args[0] as string, pattern: args[1] as string }
          : args.length === 1
          ? { pattern: args[0] as string }
          : {};
      } else {
        throw new TypeError(
          "query() takes ([env,] [pattern][, cb]) or ({ pattern, env, all }[, cb])",
        );
      }
      const { env, pattern, all, since } = opts;
      if (pattern !== undefined) parsePattern(pattern);
      const body: {
        op: "query";
        pattern?: string;
        env?: string;
        all?: boolean;
        since?: boolean;
      } = { op: "query" };
      if (pattern !== undefined) body.pattern = pattern;
      if (env !== undefined) body.env = env;
      if (all === true) body.all = true;
      if (since === true) body.since = true;
      this.#request(body).then(
        (r) => resolve(r as unknown as ServiceRecord[]),
        reject,
      );
    });
    return this.#withCallback(promise, cb);
  }

  #withCallback<T>(
    promise: Promise<T>,
    cb: ((value: T) => void) | undefined,
  ): Promise<T> {
    if (cb === undefined) return promise;
    promise.then((v) => cb(v), () => {});
    return this.#handled(promise);
  }

  get(
    pattern: string,
    optsOrCb?: GetOptions | ((records: ServiceRecord[]) => void),
    maybeCb?: (records: ServiceRecord[]) => void,
  ): Promise<ServiceRecord[]> {
    const cb = typeof optsOrCb === "function" ? optsOrCb : maybeCb;
    const opts = typeof optsOrCb === "object" ? optsOrCb : {};
    const promise = new Promise<ServiceRecord[]>((resolve, reject) => {
      if (typeof pattern !== "string") {
        throw new TypeError("get() takes a pattern string");
      }
      parsePattern(pattern);
      const { signal, timeout } = opts;
      if (timeout !== undefined) positive("timeout", timeout, 0);
      if (signal?.aborted) throw aborted(pattern, signal.reason);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const p: Pending = {
        body: { op: "get", pattern },
        retry: true,
        resolve: (r) => {
          cleanup();
          resolve(r as unknown as ServiceRecord[]);
        },
        reject: (err) => {
          cleanup();
          reject(err);
        },
      };
      const abort = (reason: unknown) => {
        cleanup();
        const i = this.#queue.indexOf(p);
        if (i >= 0) this.#queue.splice(i, 1);
        if (p.id !== undefined && this.#pending.delete(p.id)) {
          this.#transmit({
            body: { op: "cancel", target: p.id },
            retry: false,
            onDrop: () => {},
            resolve: () => {},
            reject: () => {},
          });
        }
        reject(reason);
      };
      const onAbort = () => abort(aborted(pattern, signal!.reason));
      const cleanup = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      if (timeout !== undefined) {
        timer = setTimeout(
          () =>
            abort(
              new TimeoutError(
                `get("${pattern}") found no match within ${timeout} ms`,
              ),
            ),
          timeout,
        );
      }
      if (this.#closed()) {
        p.reject(new ConnectionError("The client is closed", {}, "CLOSED"));
      } else if (this.#state === "ready") this.#transmit(p);
      else this.#queue.push(p);
    });
    return this.#withCallback(promise, cb);
  }

  #subscribe(): void {
    const body: { op: "subscribe"; all?: boolean; snapshot?: boolean } = {
      op: "subscribe",
    };
    if (this.#subscribedAll) body.all = true;
    const snapshot = this.#emitter.count("resync") > 0;
    if (snapshot) body.snapshot = true;
    this.#transmit({
      body,
      retry: false,
      onDrop: () => {},
      // called as the reply is read, in order with the events around it
      resolve: (result) => {
        if (snapshot && Array.isArray(result)) {
          this.#emitter.emit("resync", result as unknown as ServiceRecord[]);
        }
      },
      reject: (err) => this.#reportError(err),
    });
  }

  on<K extends keyof PortsEvents>(
    event: K,
    fn: PortsEvents[K],
    scope?: EventScope,
  ): this {
    if (!SERVER_EVENTS.has(event)) {
      this.#emitter.on(event, fn);
      return this;
    }
    if (typeof fn !== "function") {
      throw new TypeError("The listener must be a function");
    }
    if (scope?.env !== undefined && typeof scope.env !== "string") {
      throw new TypeError(`The scope's "env" must be a string`);
    }
    this.off(event, fn);
    const own = this.#opts.env ?? "";
    const env = scope?.all === true ? null : (scope?.env ?? own);
    const listener = fn as (r: unknown, unready?: boolean) => void;
    const filtered = event === "resync"
      ? (records: ServiceRecord[]) =>
        listener(
          env === null ? records : records.filter((r) => r.env === env),
        )
      : (record: ServiceRecord, unready: boolean) => {
        if (env === null || record.env === env) listener(record, unready);
      };
    let mine = this.#scoped.get(event);
    if (mine === undefined) this.#scoped.set(event, mine = new Map());
    mine.set(fn, filtered);
    this.#emitter.on(event, filtered as PortsEvents[K]);
    const widen = env !== own && !this.#subscribedAll;
    if (widen) this.#subscribedAll = true;
    if (!this.#subscribed || widen || event === "resync") {
      this.#subscribed = true;
      if (this.#state === "ready") this.#subscribe();
    }
    return this;
  }

  off<K extends keyof PortsEvents>(event: K, fn: PortsEvents[K]): this {
    const mine = this.#scoped.get(event);
    const filtered = mine?.get(fn);
    if (filtered !== undefined) {
      mine!.delete(fn);
      this.#emitter.off(event, filtered as PortsEvents[K]);
    } else this.#emitter.off(event, fn);
    return this;
  }
}

/** 32 hex digits from the platform's random source. */
function newSessionId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** What an aborted `get()` rejects with: the signal's reason as the cause. */
function aborted(pattern: string, reason: unknown): Error {
  const timedOut = reason instanceof Error && reason.name === "TimeoutError";
  const text = `get("${pattern}") was ${
    timedOut ? "timed out" : "aborted"
  } by its signal`;
  return timedOut
    ? new TimeoutError(text, { cause: reason })
    : new AbortError(text, { cause: reason });
}

function checkRole(role: unknown): void {
  if (typeof role !== "string") {
    throw new TypeError('The role must be a string such as "web@1.2.3"');
  }
  parseRole(role);
}

function checkMeta(meta: unknown): void {
  if (meta === undefined) return;
  if (typeof meta !== "object" || meta === null || Array.isArray(meta)) {
    throw new TypeError("The metadata must be a plain object");
  }
}

function checkPort(port: unknown): void {
  if (typeof port !== "number" || !Number.isInteger(port)) {
    throw new TypeError(`The port must be an integer, got ${String(port)}`);
  }
  if (port < 1 || port > 65535) {
    throw new RangeError(`The port must be from 1 to 65535, got ${port}`);
  }
}

/** One `host:port`, `[ipv6]:port` or `port`; `null` when malformed. */
function parseOne(s: string): Endpoint | null {
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

/**
 * Connects to a seaport server. Calls made before the connection is up are
 * queued; the client reconnects by itself until `close()`.
 */
export function connectWith(
  env: string | undefined,
  args: readonly unknown[],
): Ports {
  const { endpoints, options } = parseAddress(args);
  return new Client(
    endpoints,
    env === undefined ? options : { ...options, env },
  );
}
