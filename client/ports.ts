/**
 * The client's public face: {@linkcode Ports} and the options and events of
 * `connect()`.
 *
 * @module
 */
import type { LostReason, Meta, ServiceRecord } from "../registry.ts";
import type { TlsClientOptions, Transport } from "../transport.ts";

/**
 * Options of {@linkcode connect}.
 *
 * @example
 * ```ts
 * import { connect } from "../mod.ts";
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
  /**
   * With the probe on, how many ports the client keeps proposed by the
   * server and checked ahead, at most, so that a new registration takes one
   * round trip (and one store write): as many as its last turn of
   * registrations took, plus one. Registrations made while none is kept
   * wait together for one `peek` round trip. `0` keeps none. Default: 64.
   */
  proposals?: number;
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
 * import { connect, createServer } from "../mod.ts";
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
 * import { connect, createServer, TimeoutError } from "../mod.ts";
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
 * import type { ServiceCallback } from "../mod.ts";
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
 * import { connect } from "../mod.ts";
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
  /**
   * A registration of this client was taken away on the server: another
   * client's `assume` of its port (`reason` `"assume"`: that one says it
   * listens there) or an operator's `seaport free` (`"evict"`). It is gone
   * and not asserted again (a `service()` included: its listener should
   * stop); a `service()`, `allocate()` or `ready()` still waiting for it
   * rejects with a `RegistryError` `LOST`.
   */
  lost: (record: ServiceRecord, reason: LostReason) => void;
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
 * import { connect } from "../mod.ts";
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
 * import { connect, createServer } from "../mod.ts";
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
