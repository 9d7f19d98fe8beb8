/**
 * One connection's life, again and again until the client closes: ask the
 * server pool for the next server, connect, say hello (and authenticate),
 * keep the heartbeat, read the server's lines, and on a lost or failed
 * connection back off (capped exponential, full jitter) and start over.
 *
 * @module
 */
import { answer, importSecret, type SecretKey } from "../_auth.ts";
import { Outbox } from "../_outbox.ts";
import {
  AuthError,
  ConnectionError,
  ProtocolError,
  TimeoutError,
} from "../errors.ts";
import {
  DEFAULT_MAX_LINE_BYTES,
  type EventMessage,
  LINE_TOO_LONG,
  LineSplitter,
  type LostMessage,
  parseServerMessage,
  PROTOCOL_VERSION,
  type ServerMessage,
} from "../protocol.ts";
import type { PortRange } from "../registry.ts";
import {
  type Conn,
  type Endpoint,
  formatEndpoint,
  type TlsClientOptions,
  type Transport,
} from "../transport.ts";
import { positive } from "./args.ts";
import type { ConnectOptions } from "./ports.ts";
import { type Body, quiet, Requests } from "./requests.ts";
import { parseOne, Servers } from "./servers.ts";

/** What the connection tells the rest of the client. */
export interface ConnectionEvents {
  /** A server event arrived. */
  event(msg: EventMessage): void;
  /** The server says a registration of this connection was taken away. */
  lost(msg: LostMessage): void;
  /** The handshake is done: the connection is up. */
  up(): void;
  /** The connection is down; the requests were told first. */
  down(): void;
  /** The client cannot go on (its secret was refused): `err` ends it. */
  failed(err: unknown): void;
  /** A connection attempt failed or the connection was lost. */
  disconnect(err: unknown): void;
  /** Something failed that no returned Promise reports. */
  report(err: unknown): void;
}

/** 32 hex digits from the platform's random source. */
function newSessionId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The client's connection to whichever server of its pool it reaches. */
export class Connection {
  /** The request pipeline on this connection. */
  readonly requests: Requests;
  #servers: Servers;
  /**
   * This client's session id, the same across reconnects and servers: a
   * server of a registry on a shared store takes over what the session held.
   */
  #session = newSessionId();
  #opts: ConnectOptions;
  #transport: Transport;
  #on: ConnectionEvents;
  #key: Promise<SecretKey> | undefined;
  #state: "connecting" | "handshake" | "ready" | "closed" = "connecting";
  #conn: Conn | undefined;
  #epoch = 0;
  #host: string | undefined;
  #peekMax = 0;
  #range: PortRange | undefined;
  #sleep:
    | { timer: ReturnType<typeof setTimeout>; wake: () => void }
    | undefined;
  #run: Promise<void> = Promise.resolve();
  #closing: Promise<never>;
  #abort: (err: unknown) => void = () => {};
  #lastHeard = 0;
  #ticker: ReturnType<typeof setInterval> | undefined;
  #tls: TlsClientOptions | undefined;
  #limits: { min: number; max: number; connect: number; line: number };

  constructor(
    endpoints: readonly Endpoint[],
    opts: ConnectOptions,
    transport: Transport,
    on: ConnectionEvents,
  ) {
    this.#opts = opts;
    this.#transport = transport;
    this.#on = on;
    this.#servers = new Servers(endpoints, { shuffle: opts.shuffle ?? true });
    this.requests = new Requests(this, (err) => on.report(err));
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
  }

  /** Starts connecting, and keeps connected until {@linkcode close}. */
  start(): void {
    this.#run = this.#loop();
  }

  /** Whether the client is closed. */
  get closed(): boolean {
    return this.#state === "closed";
  }

  /** Whether the connection is up and authenticated. */
  get connected(): boolean {
    return this.#state === "ready";
  }

  /** Counts connections: what a server holds was made on one epoch. */
  get epoch(): number {
    return this.#epoch;
  }

  /** The client's address as the server sees it, once connected. */
  get host(): string | undefined {
    return this.#host;
  }

  /**
   * The most ports one `peek` with a `count` gets proposed on this server,
   * as its hello said; 0: it proposes one at a time.
   */
  /**
   * The range the server picks this client's ports from, as its hello said;
   * `undefined` from a server that does not say.
   */
  get range(): PortRange | undefined {
    return this.#range;
  }

  get peekMax(): number {
    return this.#peekMax;
  }

  async #loop(): Promise<void> {
    let attempt = 0;
    while (!this.closed) {
      const server = this.#servers.next();
      let conn: Conn;
      try {
        conn = await this.#open(server.endpoint);
      } catch (err) {
        if (this.closed) break;
        this.#servers.failed();
        this.#on.disconnect(err);
        await this.#backoff(attempt++);
        continue;
      }
      if (this.closed) {
        conn.close();
        break;
      }
      const reading = this.#read(conn);
      let failed: unknown = undefined;
      try {
        await this.#handshakeOn(reading);
        attempt = 0;
        this.#servers.succeeded();
        this.#state = "ready";
        this.#on.up();
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
      if (this.closed) break;
      this.#on.disconnect(lost ?? failed);
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
      if (this.closed) return conn; // the caller closes it
      this.#epoch++;
      this.#conn = conn;
      this.requests.attach(new Outbox(conn, 64 << 20, () => conn.close()));
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
        this.#on.report(
          new ConnectionError("The server sent a line over the length limit"),
        );
        return;
      }
      const msg = parseServerMessage(line);
      if (msg === undefined) {
        this.#on.report(
          new ConnectionError(`The server sent an invalid message`),
        );
        return;
      }
      this.#message(msg);
    };
    try {
      let chunk: Uint8Array | null;
      while ((chunk = await conn.read()) !== null) {
        this.#lastHeard = Date.now();
        splitter.push(chunk, onLine);
        chunk = null; // not kept while the next read waits
      }
    } catch (err) {
      reason = err;
    } finally {
      conn.close();
    }
    return reason;
  }

  #message(msg: ServerMessage): void {
    if (!("ev" in msg)) this.requests.answer(msg);
    else if (msg.ev === "lost") this.#on.lost(msg);
    else this.#on.event(msg);
  }

  async #handshake(): Promise<void> {
    const hello: Body = {
      op: "hello",
      v: PROTOCOL_VERSION,
      session: this.#session,
      lost: true,
    };
    if (this.#opts.env) (hello as { env?: string }).env = this.#opts.env;
    if (this.#opts.advertise !== undefined) {
      (hello as { advertise?: string }).advertise = this.#opts.advertise;
    }
    const res = await this.requests.direct(hello) as {
      host?: string;
      auth?: { nonce?: string } | null;
      heartbeat?: number;
      timeout?: number;
      servers?: unknown;
      batch?: unknown;
      peek?: unknown;
      line?: unknown;
      range?: unknown;
    };
    this.#host = res.host;
    this.#range = portRange(res.range);
    this.#peekMax = Number.isSafeInteger(res.peek) && (res.peek as number) > 1
      ? res.peek as number
      : 0;
    this.requests.batching(
      typeof res.batch === "number" && res.batch > 1 ? res.batch : 0,
      typeof res.line === "number" ? res.line : DEFAULT_MAX_LINE_BYTES,
      this.#limits.line,
      res.host ?? "",
    );
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
        await this.requests.direct({ op: "auth", mac });
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
        this.#on.report(
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
      this.requests.transmit(quiet({ op: "ping" }));
    }, Math.min(beat, timeout / 2));
  }

  #down(): void {
    clearInterval(this.#ticker);
    this.#ticker = undefined;
    if (!this.closed) this.#state = "connecting";
    this.#conn = undefined;
    this.requests.lost();
    this.#on.down();
  }

  #backoff(attempt: number): Promise<void> {
    if (this.closed) return Promise.resolve();
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
    this.#on.failed(err);
  }

  /**
   * Closes the connection and stops reconnecting; the caller then settles
   * what waits, and awaits {@linkcode finished}.
   *
   * @returns Whether the client was open until now.
   */
  close(): boolean {
    if (this.closed) return false;
    this.#state = "closed";
    clearInterval(this.#ticker);
    this.#abort(new ConnectionError("The client was closed", {}, "CLOSED"));
    this.#conn?.close();
    if (this.#sleep !== undefined) {
      clearTimeout(this.#sleep.timer);
      this.#sleep.wake();
    }
    return true;
  }

  /** Resolves once the connection loop has ended, after {@linkcode close}. */
  get finished(): Promise<void> {
    return this.#run;
  }
}

/** A `[low, high]` range of ports, if `v` is one. */
function portRange(v: unknown): PortRange | undefined {
  if (!Array.isArray(v) || v.length !== 2) return undefined;
  const [low, high] = v;
  const ok = (p: unknown): p is number =>
    Number.isInteger(p) && (p as number) > 0 && (p as number) < 65536;
  return ok(low) && ok(high) && low <= high ? [low, high] : undefined;
}
