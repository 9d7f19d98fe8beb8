/**
 * The seaport server: accepts connections from the transport, speaks the wire
 * protocol, and applies requests to the registry.
 *
 * @module
 */
import { hostname as machineName } from "node:os";
import { Emitter } from "./_emitter.ts";
import { importSecret, newNonce, type SecretKey, verify } from "./_auth.ts";
import { IdMap } from "./_ids.ts";
import { Outbox } from "./_outbox.ts";
import { ServerStats } from "./_stats.ts";
import {
  checkHttpOptions,
  type HttpOptions,
  type HttpSide,
  type RegistryView,
  startHttp,
} from "./http/mod.ts";
import {
  AuthError,
  errorToWire,
  ProtocolError,
  RegistryError,
  SeaportError,
  type WireError,
} from "./errors.ts";
import {
  type BatchItem,
  type BatchRequest,
  DEFAULT_MAX_LINE_BYTES,
  encode,
  encodeReply,
  isInvalid,
  LINE_TOO_LONG,
  LineSplitter,
  MAX_BATCH,
  MAX_PEEK,
  parseRequest,
  PROTOCOL_VERSION,
  type Request,
} from "./protocol.ts";
import {
  type ChangeResult,
  DEFAULT_RANGE,
  hostPort,
  type Lost,
  type Meta,
  type PortRange,
  rangeOf,
  type RangeOption,
  type RegistrationInput,
  type RegistryEvent,
  type RegistryEventType,
  type ServiceRecord,
  type Wakeup,
} from "./registry.ts";
import { type Change, MemoryStore, type Store } from "./store/mod.ts";
import { EtcdStore, type EtcdStoreOptions } from "./store/etcd_store.ts";
import {
  type Addr,
  type Conn,
  defaultTransport,
  type Listener,
  type TlsServerOptions,
  type Transport,
} from "./transport.ts";

/**
 * Options of {@linkcode createServer}. Every limit has a sane default.
 *
 * @example
 * ```ts
 * import { createServer } from "./mod.ts";
 * const server = createServer({
 *   secret: "beep boop",
 *   range: { "*": [10000, 20000], "10.0.0.5": [30000, 30100] },
 *   heartbeat: 1000,
 *   timeout: 3000,
 * });
 * await server.close();
 * ```
 */
export interface ServerOptions {
  /** A shared secret every client must prove it knows. */
  secret?: string;
  /**
   * Port ranges by host, `*` for every other host.
   * Default: `{ "*": [10000, 20000] }`.
   */
  range?: RangeOption;
  /** The longest line accepted, in bytes. Default: 65536. */
  maxLineBytes?: number;
  /** Registrations one connection may hold. Default: 100000. */
  maxRegistrationsPerConnection?: number;
  /** Waiting gets one connection may have. Default: 10000. */
  maxPendingGets?: number;
  /** Connections open at once. Default: 10000. */
  maxConnections?: number;
  /** Milliseconds a connection has to say hello (and authenticate). Default: 10000. */
  handshakeTimeout?: number;
  /** Failed authentication attempts before a connection is closed. Default: 3. */
  maxAuthFailures?: number;
  /** Bytes that may wait unread by a client before it is dropped. Default: 64 MiB. */
  maxBufferedBytes?: number;
  /**
   * How often clients are asked to send a heartbeat, in ms. Default: 3000.
   */
  heartbeat?: number;
  /**
   * Milliseconds of silence after which a connection is taken for dead and
   * its registrations are freed (a stopped process, a vanished host).
   * Default: 10000.
   */
  timeout?: number;
  /**
   * Milliseconds for which a freed port is passed over when ports are
   * picked, so that a client whose connection dropped finds its ports free
   * when it comes back (its `service()`s take them again), and a process
   * that may still be going does not share its port with a newcomer. Only
   * when every other free port of the range is held is one used, the one
   * freed longest ago. On the etcd store every server holds the ports it
   * sees freed. `0` turns it off. Default: 5000.
   */
  reuseDelay?: number;
  /**
   * Milliseconds for which a port proposed to a client (`peek`, which it
   * checks and then asks for by number) is passed over when ports are
   * picked for others, as freed ones are. A client uses a proposal for up to
   * one second after it checked it. `0` turns it off. Default: 2000.
   */
  proposalHold?: number;
  /** Serve TLS with this certificate and key instead of plain TCP. */
  tls?: TlsServerOptions;
  /** The transport to listen with. Default: the runtime's own. */
  transport?: Transport;
  /**
   * Also serve the HTTP side (JSON API, events, metrics, web view) on this
   * port, from the same registry; see {@linkcode HttpOptions}. With a
   * `secret`, `http.token` is required.
   */
  http?: HttpOptions;
  /**
   * The client addresses (`"host:port"`) of the registry's live servers, sent
   * in every `hello` reply as `servers`: a client given one address learns the
   * others and fails over to them. For a registry of several servers on a
   * shared store. Without it the reply has no `servers`, except on the etcd
   * store, where it lists the registry's live servers (each one's
   * `etcd.address`, read from etcd at every lease keep-alive). Called once
   * per handshake; a throw is reported as an `error` event and the list left
   * out.
   *
   * @example
   * ```ts
   * import { createServer } from "./mod.ts";
   * const server = createServer({
   *   announce: () => ["10.0.0.1:9090", "10.0.0.2:9090"],
   * });
   * await server.close();
   * ```
   */
  announce?: () => readonly string[];
  /**
   * Keep the registry in etcd instead of this server's memory, so that
   * several servers with the same `etcd` (endpoints and prefix) and the same
   * `secret` serve one registry; see {@linkcode EtcdStoreOptions}. Without
   * it the registry lives in this server alone.
   */
  etcd?: EtcdStoreOptions;
}

/**
 * Listeners of {@linkcode Server} events.
 *
 * @example
 * ```ts
 * import { createServer } from "./mod.ts";
 * const server = createServer();
 * server.on("assume", (r) => console.log("assumed", r.role, r.port));
 * server.on("error", (err) => console.error(err));
 * await server.close();
 * ```
 */
export interface ServerEvents {
  /** An allocated port became ready (visible), or ready again. */
  allocate: (record: ServiceRecord, unready: boolean) => void;
  /** A service assumed a port (or an assumed port is ready again). */
  assume: (record: ServiceRecord, unready: boolean) => void;
  /**
   * A registration was freed, or went not ready (`unready`: hidden, its port
   * still reserved).
   */
  free: (record: ServiceRecord, unready: boolean) => void;
  /** A listener threw, or accepting connections failed. */
  error: (err: unknown) => void;
}

/**
 * A seaport server. Create one with {@linkcode createServer}.
 *
 * @example
 * ```ts
 * import { createServer } from "./mod.ts";
 * await using server = createServer();
 * const { port } = await server.listen(0, "127.0.0.1");
 * console.log(port > 0, server.query("web")); // true []
 * ```
 */
export interface Server extends AsyncDisposable {
  /**
   * Starts listening.
   *
   * @param port The TCP port; 0 picks a free one. Default: 0.
   * @param hostname The address to bind. Default: `::` (all addresses, IPv4
   * and IPv6), or `0.0.0.0` where IPv6 is unavailable.
   * @returns The bound address.
   */
  listen(port?: number, hostname?: string): Promise<Addr>;
  /** The bound address, once listening. */
  readonly addr: Addr | undefined;
  /** The HTTP side's bound address, once listening with `http`. */
  readonly httpAddr: Addr | undefined;
  /** Adds an event listener. */
  on<K extends keyof ServerEvents>(event: K, fn: ServerEvents[K]): this;
  /** Removes an event listener. */
  off<K extends keyof ServerEvents>(event: K, fn: ServerEvents[K]): this;
  /**
   * The visible registrations matching `pattern` (all without one), in `env`
   * (all environments without one). Synchronous.
   *
   * @throws {RegistryError} `INVALID_PATTERN` for a bad pattern.
   */
  query(pattern?: string, env?: string): ServiceRecord[];
  /** The number of open connections. */
  readonly connections: number;
  /** Closes the listener, every connection and every timer. */
  close(): Promise<void>;
}

/**
 * The JSON of the registry's shared answers: a role's answer stays the same
 * object until the role changes, so repeated queries and wake-ups are encoded
 * once (and the entry goes when the answer is collected).
 */
const encoded = new WeakMap<readonly ServiceRecord[], string>();

interface GetToken {
  readonly session: Session;
  readonly id: number;
}

const enum State {
  Hello,
  Auth,
  Ready,
  Closed,
}

class Session {
  state: State = State.Hello;
  /** The client's session id from its hello (`""`: none). */
  sid = "";
  /** Said in its hello that it wants `lost` events. */
  told = false;
  env = "";
  nonce = "";
  authFailures = 0;
  gets = new IdMap<GetToken>(8);
  backlog: string[] | undefined;
  /** When it last sent anything (`performance.now()`). */
  lastSeen = performance.now();
  timer: ReturnType<typeof setTimeout> | undefined;
  host: string;
  readonly outbox: Outbox;

  constructor(readonly conn: Conn, maxBuffered: number) {
    this.host = conn.remoteAddr.hostname;
    this.outbox = new Outbox(conn, maxBuffered, () => this.conn.close());
  }

  reply(id: number | null, result: unknown): void {
    this.outbox.send(encode({ id, result } as never));
  }

  /** Replies with a list of records, encoding each distinct list once. */
  records(id: number, list: readonly ServiceRecord[]): void {
    let json = encoded.get(list);
    if (json === undefined) {
      json = JSON.stringify(list);
      if (Object.isFrozen(list)) encoded.set(list, json);
    }
    this.outbox.send(encodeReply(id, json));
  }

  fail(id: number | null, err: unknown): void {
    this.outbox.send(encode({ id, error: errorToWire(err) }));
  }
}

function positive(name: string, v: number | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  if (!Number.isInteger(v) || v < 1) {
    throw new RangeError(
      `Option "${name}" must be a positive integer, got ${v}`,
    );
  }
  return v;
}

class SeaportServer implements Server {
  #store: Store<Session, GetToken>;
  #drops = new Set<Promise<void>>();
  #emitter: Emitter<ServerEvents>;
  #transport: Transport;
  #listener: Listener | undefined;
  #sessions = new Set<Session>();
  /** Subscribed sessions and the environment they follow (all: `null`). */
  #subscribers = new Map<Session, string | null>();
  #loops = new Set<Promise<void>>();
  #acceptLoop: Promise<void> | undefined;
  #key: Promise<SecretKey> | undefined;
  #limits: {
    line: number;
    regs: number;
    gets: number;
    conns: number;
    handshake: number;
    auth: number;
    heartbeat: number;
    timeout: number;
    buffered: number;
  };
  #closed = false;
  #tls: TlsServerOptions | undefined;
  #sweeper: ReturnType<typeof setInterval> | undefined;
  #stats = new ServerStats();
  #started = 0;
  #httpOptions: HttpOptions | undefined;
  #http: HttpSide | undefined;
  #range: RangeOption;
  #announce: (() => readonly string[]) | undefined;
  /** The `etcd.address` option: where clients reach this server. */
  #etcdAddress: string | undefined;

  constructor(opts: ServerOptions) {
    this.#tls = opts.tls;
    if (opts.announce !== undefined && typeof opts.announce !== "function") {
      throw new TypeError(`Option "announce" must be a function`);
    }
    this.#announce = opts.announce;
    this.#etcdAddress = opts.etcd?.address;
    if (opts.secret !== undefined && typeof opts.secret !== "string") {
      throw new TypeError(`Option "secret" must be a string`);
    }
    this.#range = opts.range ?? { "*": DEFAULT_RANGE };
    this.#httpOptions = opts.http === undefined
      ? undefined
      : checkHttpOptions(opts.http, opts.secret);
    const registry = {
      ...(opts.range !== undefined ? { range: opts.range } : {}),
      newId: idMaker(),
      now: Date.now,
      reuseDelay: opts.reuseDelay ?? 5000,
      proposalHold: opts.proposalHold ?? 2000,
    };
    this.#store = opts.etcd === undefined
      ? new MemoryStore(registry)
      : new EtcdStore(opts.etcd, {
        ...registry,
        leaseTtl: Math.ceil(positive("timeout", opts.timeout, 10_000) / 1000),
        onLeaseLost: () => {
          // etcd freed this server's registrations: its clients reconnect
          // and assert them again.
          for (const s of this.#sessions) this.#drop(s);
        },
      });
    this.#emitter = new Emitter((err) => this.#emitter.emit("error", err));
    this.#transport = opts.transport ?? defaultTransport();
    this.#key = opts.secret === undefined
      ? undefined
      : importSecret(opts.secret);
    this.#limits = {
      line: positive("maxLineBytes", opts.maxLineBytes, DEFAULT_MAX_LINE_BYTES),
      regs: positive(
        "maxRegistrationsPerConnection",
        opts.maxRegistrationsPerConnection,
        100_000,
      ),
      gets: positive("maxPendingGets", opts.maxPendingGets, 10_000),
      conns: positive("maxConnections", opts.maxConnections, 10_000),
      handshake: positive("handshakeTimeout", opts.handshakeTimeout, 10_000),
      auth: positive("maxAuthFailures", opts.maxAuthFailures, 3),
      heartbeat: positive("heartbeat", opts.heartbeat, 3000),
      timeout: positive("timeout", opts.timeout, 10_000),
      buffered: positive("maxBufferedBytes", opts.maxBufferedBytes, 64 << 20),
    };
  }

  get addr(): Addr | undefined {
    return this.#listener?.addr;
  }

  get connections(): number {
    return this.#sessions.size;
  }

  get httpAddr(): Addr | undefined {
    return this.#http?.addr;
  }

  async listen(port = 0, hostname?: string): Promise<Addr> {
    if (this.#listener !== undefined) {
      throw new Error("The server is already listening");
    }
    if (this.#closed) throw new Error("The server is closed");
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      throw new RangeError(
        `Invalid port ${port}: need an integer from 0 to 65535`,
      );
    }
    await this.#store.open((change) => this.#apply(change));
    const listen = (hostname: string) =>
      this.#transport.listen({ hostname, port }, this.#tls);
    if (hostname !== undefined) {
      this.#listener = await listen(hostname);
    } else {
      try {
        this.#listener = await listen("::");
      } catch {
        this.#listener = await listen("0.0.0.0");
      }
    }
    this.#acceptLoop = this.#accept(this.#listener);
    const store = this.#store;
    if (store instanceof EtcdStore) {
      // Tell the registry's other servers (and so their clients) where
      // clients reach this one; without an announce option, say theirs.
      const { port: bound } = this.#listener.addr;
      const wildcard = hostname === undefined || hostname === "::" ||
        hostname === "0.0.0.0";
      const address = this.#etcdAddress ??
        hostPort({ host: wildcard ? machineName() : hostname, port: bound });
      await store.announce(address);
      this.#announce ??= () => store.servers;
    }
    const every = Math.max(10, Math.floor(this.#limits.timeout / 20));
    this.#sweeper = setInterval(() => this.#sweep(), every);
    if (this.#httpOptions !== undefined) {
      try {
        this.#http = await startHttp(this.#view(), this.#httpOptions, {
          hostname: this.#httpOptions.hostname ?? hostname,
          tls: this.#tls,
        }, (err) => this.#emitter.emit("error", err));
      } catch (err) {
        await this.close();
        throw err;
      }
    }
    return this.#listener.addr;
  }

  on<K extends keyof ServerEvents>(event: K, fn: ServerEvents[K]): this {
    this.#emitter.on(event, fn);
    return this;
  }

  off<K extends keyof ServerEvents>(event: K, fn: ServerEvents[K]): this {
    this.#emitter.off(event, fn);
    return this;
  }

  query(pattern?: string, env?: string): ServiceRecord[] {
    return [...this.#store.view.query(env, pattern)];
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#sweeper);
    await this.#http?.close();
    this.#listener?.close();
    for (const s of this.#sessions) s.conn.close();
    await this.#acceptLoop;
    await Promise.all(this.#loops);
    await Promise.all(this.#drops);
    await this.#store.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** What the HTTP side reads: queries, events and counters, never changes. */
  #view(): RegistryView {
    const sessions = this.#sessions;
    return {
      query: (pattern?: string, env?: string) => this.query(pattern, env),
      on: <K extends RegistryEventType>(type: K, fn: ServerEvents[K]) =>
        this.#emitter.on(type, fn),
      off: <K extends RegistryEventType>(type: K, fn: ServerEvents[K]) =>
        this.#emitter.off(type, fn),
      connections: () => sessions.size,
      waitingGets: () => {
        let n = 0;
        for (const s of sessions) n += s.gets.size;
        return n;
      },
      stats: this.#stats,
      range: this.#range,
      store: () => {
        const store = this.#store;
        return store instanceof EtcdStore
          ? {
            kind: "etcd" as const,
            reachable: store.reachable,
            lastHeard: store.lastHeard,
            resyncs: store.resyncs,
          }
          : { kind: "memory" as const };
      },
    };
  }

  async #accept(listener: Listener): Promise<void> {
    try {
      for await (const conn of listener) {
        if (this.#closed) {
          conn.close();
          continue;
        }
        const loop = this.#serve(conn);
        this.#loops.add(loop);
        loop.finally(() => this.#loops.delete(loop));
      }
    } catch (err) {
      if (!this.#closed) this.#emitter.emit("error", err);
    }
  }

  async #serve(conn: Conn): Promise<void> {
    const s = new Session(conn, this.#limits.buffered);
    if (this.#sessions.size >= this.#limits.conns) {
      s.fail(
        null,
        new RegistryError(
          "LIMIT",
          `Too many connections: the server accepts at most ${this.#limits.conns}`,
        ),
      );
      await s.outbox.drained();
      conn.close();
      return;
    }
    this.#sessions.add(s);
    s.timer = setTimeout(() => {
      s.fail(null, new ProtocolError("PROTOCOL", "Handshake timed out"));
      s.outbox.drained().then(() => conn.close());
    }, this.#limits.handshake);
    const splitter = new LineSplitter(this.#limits.line);
    const onLine = (line: string | typeof LINE_TOO_LONG) => this.#line(s, line);
    try {
      let chunk: Uint8Array | null;
      while (s.state !== State.Closed && (chunk = await conn.read()) !== null) {
        // One clock read per chunk: the silence timeout's, and the start of
        // the wake-up time of a request in it (/metrics).
        this.#started = s.lastSeen = performance.now();
        splitter.push(chunk, onLine);
        // Not kept while the next read waits: after a burst, an idle
        // connection would hold its last chunk (up to 64 KiB) until then.
        chunk = null;
      }
    } catch {
      // a reset connection ends like a closed one
    } finally {
      this.#drop(s);
    }
  }

  /** Drops connections that have been silent for longer than the timeout. */
  #sweep(): void {
    const deadline = performance.now() - this.#limits.timeout;
    for (const s of this.#sessions) {
      if (s.state === State.Ready && s.lastSeen < deadline) this.#drop(s);
    }
  }

  #drop(s: Session): void {
    if (s.state === State.Closed && !this.#sessions.has(s)) return;
    s.state = State.Closed;
    clearTimeout(s.timer);
    this.#sessions.delete(s);
    this.#subscribers.delete(s);
    s.conn.close();
    const change = this.#store.drop(s);
    if (!(change instanceof Promise)) return this.#apply(change);
    const done = change.then(
      (c) => this.#apply(c),
      (err) => this.#emitter.emit("error", err),
    );
    this.#drops.add(done);
    done.finally(() => this.#drops.delete(done));
  }

  /**
   * Answers a request once the store's write took effect, holding the
   * session's later requests until then so they see it (and keep their
   * order). `first`: apply the change before replying.
   */
  #later(
    s: Session,
    id: number,
    pending: Promise<ChangeResult<GetToken>>,
    first: boolean,
    answer: "record" | "empty",
  ): void {
    s.backlog = [];
    pending.then((c) => {
      if (first) this.#apply(c);
      if (s.state !== State.Closed) {
        s.reply(id, answer === "record" ? c.record : {});
      }
      if (!first) this.#apply(c);
    }, (err) => {
      if (!(err instanceof SeaportError)) this.#emitter.emit("error", err);
      this.#stats.error(err instanceof SeaportError ? err.code : "INTERNAL");
      if (s.state !== State.Closed) s.fail(id, err);
    }).finally(() => {
      const backlog = s.backlog ?? [];
      s.backlog = undefined;
      // a line that starts another write queues the rest again, in order
      if (backlog.length > 0) this.#started = performance.now();
      for (const line of backlog) this.#line(s, line);
    });
  }

  #apply(change: ChangeResult<GetToken>): void {
    for (const ev of change.events) this.#publish(ev);
    if (change.lost !== undefined) this.#tellLost(change.lost);
    for (const w of change.woken) {
      const { session, id } = w.token;
      session.gets.delete(id);
      session.records(id, w.records);
      this.#stats.wakeups.observe((performance.now() - this.#started) / 1000);
    }
  }

  /**
   * Tells connections of this server that asked for it (`lost` in their
   * hello) which of their registrations another's change took away.
   */
  #tellLost(lost: readonly Lost[]): void {
    for (const { owner, record, reason } of lost) {
      const s = owner as Session;
      if (!this.#sessions.has(s) || s.state === State.Closed) continue;
      this.#stats.lost.set(reason, (this.#stats.lost.get(reason) ?? 0) + 1);
      if (s.told) s.outbox.send(encode({ ev: "lost", record, reason }));
    }
  }

  #publish({ type, record, unready }: RegistryEvent): void {
    let line: string | undefined;
    if (this.#subscribers.size > 0) {
      for (const [s, env] of this.#subscribers) {
        if (env !== null && env !== record.env) continue;
        line ??= encode(
          unready ? { ev: type, record, unready } : { ev: type, record },
        );
        s.outbox.send(line);
      }
    }
    this.#emitter.emit(type, record, unready === true);
  }

  #line(s: Session, line: string | typeof LINE_TOO_LONG): void {
    if (s.state === State.Closed) return;
    if (s.backlog !== undefined) {
      if (line !== LINE_TOO_LONG) s.backlog.push(line);
      return;
    }
    if (line === LINE_TOO_LONG) {
      this.#stats.error("LINE_TOO_LONG");
      s.fail(
        null,
        new ProtocolError(
          "LINE_TOO_LONG",
          `Line longer than ${this.#limits.line} bytes was dropped`,
        ),
      );
      return;
    }
    const req = parseRequest(line);
    if (isInvalid(req)) {
      this.#stats.error(req.error.code);
      s.outbox.send(encode(req));
      return;
    }
    this.#stats.request(req.op);
    try {
      this.#handle(s, req);
    } catch (err) {
      if (!(err instanceof SeaportError)) {
        this.#emitter.emit("error", err);
      }
      this.#stats.error(err instanceof SeaportError ? err.code : "INTERNAL");
      s.fail(req.id, err);
    }
  }

  /** What the `announce` option says now, if set and well formed. */
  #announced(): string[] | undefined {
    if (this.#announce === undefined) return undefined;
    try {
      const list = this.#announce();
      if (!Array.isArray(list) || list.some((a) => typeof a !== "string")) {
        throw new TypeError(
          `Option "announce" must return an array of "host:port" strings`,
        );
      }
      return [...list];
    } catch (err) {
      this.#emitter.emit("error", err);
      return undefined;
    }
  }

  #handle(s: Session, req: Request): void {
    if (s.state === State.Hello) {
      if (req.op !== "hello") {
        throw new ProtocolError(
          "PROTOCOL",
          `"${req.op}" before the handshake: send "hello" first`,
        );
      }
      if (req.v !== PROTOCOL_VERSION) {
        throw new ProtocolError(
          "PROTOCOL",
          `Unsupported protocol version ${req.v}: this server speaks ${PROTOCOL_VERSION}`,
        );
      }
      s.env = req.env ?? "";
      if (req.session !== undefined) s.sid = req.session;
      if (req.lost === true) s.told = true;
      if (req.advertise !== undefined) s.host = req.advertise;
      const hello: {
        v: number;
        host: string;
        heartbeat: number;
        timeout: number;
        auth: null | { alg: string; nonce: string };
        batch: number;
        peek: number;
        line: number;
        range: PortRange;
        servers?: string[];
      } = {
        v: PROTOCOL_VERSION,
        host: s.host,
        heartbeat: this.#limits.heartbeat,
        timeout: this.#limits.timeout,
        auth: null,
        batch: MAX_BATCH,
        peek: MAX_PEEK,
        line: this.#limits.line,
        range: rangeOf(this.#range, s.host),
      };
      const servers = this.#announced();
      if (servers !== undefined) hello.servers = servers;
      if (this.#key === undefined) {
        this.#ready(s);
      } else {
        s.state = State.Auth;
        s.nonce = newNonce();
        hello.auth = { alg: "HMAC-SHA-256", nonce: s.nonce };
      }
      s.reply(req.id, hello);
      return;
    }
    if (s.state === State.Auth) {
      if (req.op !== "auth") {
        throw new ProtocolError(
          "PROTOCOL",
          `"${req.op}" before authentication: send "auth" first`,
        );
      }
      this.#authenticate(s, req.id, req.mac);
      return;
    }
    const store = this.#store;
    const reg = store.view;
    switch (req.op) {
      case "hello":
      case "auth":
        throw new ProtocolError("PROTOCOL", `"${req.op}" was already done`);
      case "allocate": {
        const change = store.allocate(s, this.#input(s, req), {
          port: req.port,
          exclude: req.exclude,
          ready: req.ready,
        });
        if (change instanceof Promise) {
          return this.#later(s, req.id, change, true, "record");
        }
        // Waiters first: their answers are what a wake-up waits for.
        this.#apply(change);
        s.reply(req.id, change.record);
        return;
      }
      case "ready": {
        const change = store.ready(s, req.rid);
        if (change instanceof Promise) {
          return this.#later(s, req.id, change, true, "empty");
        }
        this.#apply(change);
        s.reply(req.id, {});
        return;
      }
      case "unready": {
        const change = store.unready(s, req.rid);
        if (change instanceof Promise) {
          return this.#later(s, req.id, change, false, "empty");
        }
        s.reply(req.id, {});
        this.#apply(change);
        return;
      }
      case "assume": {
        const change = store.assume(
          s,
          this.#input(s, req),
          req.port,
          req.ready === false ? { ready: false } : {},
        );
        if (change instanceof Promise) {
          return this.#later(s, req.id, change, true, "record");
        }
        this.#apply(change);
        s.reply(req.id, change.record);
        return;
      }
      case "evict": {
        const change = store.evict(req.host, req.port);
        if (change instanceof Promise) {
          return this.#later(s, req.id, change, false, "record");
        }
        s.reply(req.id, change.record);
        this.#apply(change);
        return;
      }
      case "free": {
        const change = req.rid !== undefined
          ? store.free(s, { id: req.rid })
          : store.free(s, { host: s.host, port: req.port! });
        if (change instanceof Promise) {
          return this.#later(s, req.id, change, false, "record");
        }
        s.reply(req.id, change.record);
        this.#apply(change);
        return;
      }
      case "query": {
        const env = req.all === true ? undefined : (req.env ?? s.env);
        const found = reg.query(env, req.pattern);
        if (req.since === true) {
          s.reply(req.id, found.map((r) => ({ ...r, since: reg.since(r) })));
        } else s.records(req.id, found);
        return;
      }
      case "get": {
        if (s.gets.has(req.id)) {
          throw new ProtocolError(
            "BAD_REQUEST",
            `A get with id ${req.id} is already waiting`,
          );
        }
        if (s.gets.size >= this.#limits.gets) {
          throw new RegistryError(
            "LIMIT",
            `Too many waiting gets: at most ${this.#limits.gets} per connection`,
          );
        }
        const token: GetToken = { session: s, id: req.id };
        const now = reg.wait(s, req.env ?? s.env, req.pattern, token);
        if (now !== undefined) s.records(req.id, now);
        else s.gets.set(req.id, token);
        return;
      }
      case "cancel": {
        const token = s.gets.get(req.target);
        s.gets.delete(req.target);
        const cancelled = token !== undefined && reg.cancelWait(s, token);
        s.reply(req.id, { cancelled });
        return;
      }
      case "subscribe":
      case "unsubscribe":
        if (req.op === "unsubscribe") {
          this.#subscribers.delete(s);
          s.reply(req.id, {});
          return;
        }
        {
          const env = req.all === true ? null : (req.env ?? s.env);
          this.#subscribers.set(s, env);
          if (req.snapshot === true) {
            s.records(req.id, reg.query(env ?? undefined));
          } else s.reply(req.id, {});
        }
        return;
      case "ping":
        s.reply(req.id, {});
        return;
      case "peek": {
        if (req.count === undefined) {
          s.reply(req.id, { port: reg.peek(s.host) ?? null });
          return;
        }
        const ports = reg.peekMany(s.host, req.count);
        s.reply(req.id, { ports });
        return;
      }
      case "batch":
        return this.#batch(s, req);
    }
  }

  /**
   * Applies the items of a `batch` in order as one change: their events and
   * the gets they satisfy first (as for one request), then the one reply
   * with each item's result or error. An item that fails fails alone. The
   * items go to the store in order; a store that writes elsewhere (etcd) gets
   * a run of them at once, so they travel together (its writes of one key
   * stay in order), except that a free or an assume waits for the items
   * before it, a claim of a named port for them when one of them may
   * concern that port (a free, an assume, a claim of the same port or one
   * that picks), and a second change of one registration for the first.
   * The reply waits for the last. Items still waiting when the connection
   * ends are not issued.
   */
  #batch(s: Session, req: BatchRequest): void {
    const items = req.ops;
    const n = items.length;
    const results: ({ result: unknown } | { error: WireError })[] = new Array(
      n,
    );
    const changes: (ChangeResult<GetToken> | undefined)[] = new Array(n);
    const failed = (k: number, err: unknown) => {
      if (!(err instanceof SeaportError)) this.#emitter.emit("error", err);
      this.#stats.error(err instanceof SeaportError ? err.code : "INTERNAL");
      results[k] = { error: errorToWire(err) };
    };
    const done = (item: BatchItem, k: number, c: ChangeResult<GetToken>) => {
      results[k] = {
        result: item.op === "ready" || item.op === "unready" ? {} : c.record,
      };
      changes[k] = c;
    };
    // items in flight (a store that writes elsewhere), and the allocations
    // among them, which the store does not count yet
    let inflight: Promise<void>[] = [];
    let adding = 0;
    const rids = new Set<string>();
    // in flight: the ports claimed by number, and whether anything else
    // (a free, an assume, an allocation that picks) may concern any port
    const named = new Set<number>();
    let anyPort = false;
    // the ports in use on the client's host: picked for no allocation
    const avoid = req.exclude === undefined || req.exclude.length === 0
      ? undefined
      : new Set(req.exclude);
    let k = 0;
    const issue = (): Promise<unknown> | undefined => {
      // The connection ended while earlier items were in flight: the store
      // freed what it held (and frees what those items wrote as they land);
      // the rest is not written, or it would outlive the connection.
      if (s.state === State.Closed) return undefined;
      for (; k < n; k++) {
        const item = items[k]!;
        if ("error" in item) {
          this.#stats.error(item.error.code);
          results[k] = { error: item.error };
          continue;
        }
        // a free, an assume or a named port may concern an item before it:
        // it waits until those have landed
        const port = item.op === "allocate" ? item.port : undefined;
        if (
          inflight.length > 0 &&
          (item.op === "free" || item.op === "assume" ||
            (port !== undefined && (anyPort || named.has(port))) ||
            (item.op !== "allocate" && rids.has(item.rid)))
        ) {
          const landed = Promise.all(inflight);
          inflight = [];
          rids.clear();
          named.clear();
          anyPort = false;
          adding = 0;
          return landed.then(issue);
        }
        this.#stats.request(item.op);
        let change: Change<GetToken>;
        try {
          if (adding > 0 && item.op === "allocate") this.#checkRegs(s, adding);
          change = this.#itemChange(s, item, avoid);
        } catch (err) {
          failed(k, err);
          continue;
        }
        if (change instanceof Promise) {
          if (item.op === "allocate") adding++;
          else if ("rid" in item && item.rid !== undefined) rids.add(item.rid);
          if (port !== undefined) named.add(port);
          else if (item.op !== "ready" && item.op !== "unready") anyPort = true;
          const at = k;
          inflight.push(
            change.then((c) => done(item, at, c), (err) => failed(at, err)),
          );
        } else done(item, k, change);
      }
      return inflight.length > 0 ? Promise.all(inflight) : undefined;
    };
    const finish = () => {
      const events: RegistryEvent[] = [];
      const woken: Wakeup<GetToken>[] = [];
      let lost: Lost[] | undefined;
      for (const c of changes) {
        if (c === undefined) continue;
        for (const ev of c.events) events.push(ev);
        for (const w of c.woken) woken.push(w);
        if (c.lost !== undefined) (lost ??= []).push(...c.lost);
      }
      this.#apply(lost ? { events, woken, lost } : { events, woken });
      if (s.state !== State.Closed) s.reply(req.id, results);
    };
    const pending = issue();
    if (pending === undefined) return finish();
    s.backlog = [];
    pending.then(finish, (err) => {
      this.#emitter.emit("error", err);
      if (s.state !== State.Closed) s.fail(req.id, err);
    }).finally(() => {
      const backlog = s.backlog ?? [];
      s.backlog = undefined;
      for (const line of backlog) this.#line(s, line);
    });
  }

  /**
   * The store's change for one item of a `batch`; an allocation that picks
   * its port passes over `avoid` too (the batch's `exclude`).
   */
  #itemChange(
    s: Session,
    item: BatchItem,
    avoid: ReadonlySet<number> | undefined,
  ): Change<GetToken> {
    const store = this.#store;
    switch (item.op) {
      case "allocate": {
        let exclude: Iterable<number> | undefined = item.exclude;
        if (avoid !== undefined && item.port === undefined) {
          exclude = exclude === undefined
            ? avoid
            : new Set([...avoid, ...exclude]);
        }
        return store.allocate(s, this.#input(s, item), {
          port: item.port,
          exclude,
          ready: item.ready,
        });
      }
      case "ready":
        return store.ready(s, item.rid);
      case "unready":
        return store.unready(s, item.rid);
      case "assume":
        return store.assume(
          s,
          this.#input(s, item),
          item.port,
          item.ready === false ? { ready: false } : {},
        );
      case "free":
        return item.rid !== undefined
          ? store.free(s, { id: item.rid })
          : store.free(s, { host: s.host, port: item.port! });
    }
  }

  /** What a registration request asks for, once the limit is checked. */
  #input(
    s: Session,
    req: { role: string; meta?: Meta | undefined },
  ): RegistrationInput {
    this.#checkRegs(s);
    return { env: s.env, role: req.role, host: s.host, meta: req.meta };
  }

  /** Refuses a registration past the limit (`adding`: ones in flight). */
  #checkRegs(s: Session, adding = 0): void {
    if (this.#store.countOf(s) + adding >= this.#limits.regs) {
      throw new RegistryError(
        "LIMIT",
        `Too many registrations: at most ${this.#limits.regs} per connection`,
      );
    }
  }

  #ready(s: Session): void {
    s.state = State.Ready;
    clearTimeout(s.timer);
    s.timer = undefined;
  }

  #authenticate(s: Session, id: number, mac: string): void {
    s.backlog = [];
    const key = this.#key!;
    key.then((k) => verify(k, s.nonce, mac)).then((ok) => {
      if (s.state === State.Closed) return;
      if (ok) {
        this.#ready(s);
        s.reply(id, {});
      } else {
        s.authFailures++;
        this.#stats.error("AUTH");
        s.fail(
          id,
          new AuthError("Authentication failed: wrong secret"),
        );
        if (s.authFailures >= this.#limits.auth) {
          s.state = State.Closed;
          s.outbox.drained().then(() => this.#drop(s));
          return;
        }
      }
      const backlog = s.backlog ?? [];
      s.backlog = undefined;
      if (backlog.length > 0) this.#started = performance.now();
      for (const line of backlog) this.#line(s, line);
    }, (err) => {
      this.#emitter.emit("error", err);
      this.#drop(s);
    });
  }
}

/**
 * Registration ids: a short random prefix per server run (so ids from before
 * a restart are told apart) and a counter, kept short to keep records small.
 */
function idMaker(): () => string {
  const r = crypto.getRandomValues(new Uint32Array(1))[0]! % (36 ** 3);
  const prefix = r.toString(36).padStart(3, "0");
  let n = 0;
  return () => `${prefix}-${(++n).toString(36)}`;
}

/**
 * Creates a seaport server. Call `listen()` to start serving.
 *
 * @param options Secret, port ranges, limits and transport.
 * @returns The server, not yet listening.
 * @throws {RangeError} for an invalid limit or port range.
 *
 * @example Serving on a free port
 * ```ts
 * import { createServer } from "./mod.ts";
 * const server = createServer({ range: { "*": [20000, 20100] } });
 * server.on("allocate", (r) => console.log("allocated", r.role, r.port));
 * const { port } = await server.listen(0, "127.0.0.1");
 * console.log(`seaport listening on :${port}`);
 * await server.close();
 * ```
 */
export function createServer(options: ServerOptions = {}): Server {
  return new SeaportServer(options);
}
