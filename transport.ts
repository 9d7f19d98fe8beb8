/**
 * The runtime seam: TCP listeners and connections as one small interface with
 * Web Streams, backed by `Deno.listen`/`Deno.connect` on Deno and `node:net`
 * elsewhere. This is the only module that knows which runtime it runs on; Node
 * modules are loaded lazily and only off Deno. Errors are normalised here: a
 * refused connection is the same {@linkcode ConnectionError} on every runtime,
 * with the original error as `cause`.
 *
 * @module
 */
import type * as NodeFs from "node:fs";
import type * as NodeNet from "node:net";
import type * as NodeTls from "node:tls";
import { ConnectionError } from "./errors.ts";

/** A network address. */
export interface Addr {
  /** The host name or IP address (IPv4-mapped IPv6 addresses normalised). */
  readonly hostname: string;
  /** The TCP port. */
  readonly port: number;
}

/** One TCP connection. */
export interface Conn {
  /** This end's address. */
  readonly localAddr: Addr;
  /** The peer's address. */
  readonly remoteAddr: Addr;
  /**
   * The next bytes the peer sent, or `null` once it ended the connection. The
   * bytes are valid until the next call (the buffer is reused): the fast path
   * the server and client read with. Rejects when the connection fails.
   */
  read(): Promise<Uint8Array | null>;
  /**
   * The same bytes as a Web Stream (copies). Use either this or `read()`, not
   * both.
   */
  readonly readable: ReadableStream<Uint8Array>;
  /** Writes bytes; callers keep one write in flight at a time. */
  write(data: Uint8Array): Promise<void>;
  /** Closes the connection at once; safe to call more than once. */
  close(): void;
}

/** A TCP listener: an async iterable of accepted connections. */
export interface Listener extends AsyncIterable<Conn> {
  /** The bound address (the real port when port 0 was asked for). */
  readonly addr: Addr;
  /** Stops listening; the iteration ends. Safe to call more than once. */
  close(): void;
}

/** Where to listen or connect. */
export interface Endpoint {
  /** Host name or address. */
  hostname: string;
  /** Port; 0 to listen on a free one. */
  port: number;
}

/** TLS for a server: its certificate chain and private key, PEM-encoded. */
export interface TlsServerOptions {
  /** The certificate chain, PEM. */
  cert: string;
  /** The private key, PEM. */
  key: string;
}

/** TLS for a client. */
export interface TlsClientOptions {
  /** Trusted CA certificates, PEM; default: the system's roots. */
  caCerts?: string[];
  /** The name to verify the server's certificate against; default: the host. */
  serverName?: string;
}

/**
 * Opens listeners and connections for one runtime.
 *
 * @example
 * ```ts
 * import { connect } from "./mod.ts";
 * import { nodeTransport } from "./transport.ts";
 * // node:net sockets even on Deno, e.g. for tests
 * const ports = connect(9090, { transport: nodeTransport() });
 * await ports.close();
 * ```
 */
export interface Transport {
  /** `deno` or `node`, for messages and tests. */
  readonly name: string;
  /** Listens on a TCP endpoint, with TLS when `tls` is given. */
  listen(endpoint: Endpoint, tls?: TlsServerOptions): Promise<Listener>;
  /**
   * Connects to a TCP endpoint, with Nagle's algorithm off and TLS when `tls`
   * is given (the handshake completes before this resolves).
   *
   * @throws {ConnectionError} when the connection cannot be made.
   */
  connect(endpoint: Endpoint, tls?: TlsClientOptions): Promise<Conn>;
  /**
   * The local ports of every TCP socket on this host (its network namespace)
   * in any state, listening, connected or closing, read once from the
   * kernel's tables (`/proc/net/tcp` and `/proc/net/tcp6` on Linux); or
   * `undefined` where they cannot be read (another OS, no permission), and
   * the caller test-binds each port instead.
   */
  boundPorts?(): Promise<ReadonlySet<number> | undefined>;
}

/** The files that list this host's TCP sockets, on Linux. */
const PROC_NET_TCP = ["/proc/net/tcp", "/proc/net/tcp6"] as const;

/**
 * Adds the local ports of the sockets a `/proc/net/tcp` or `/proc/net/tcp6`
 * table lists to `into`.
 *
 * @returns Whether `text` was such a table.
 */
export function parseProcNetTcp(text: string, into: Set<number>): boolean {
  // "  sl  local_address rem_address   st ..."
  // "   0: 0100007F:2710 00000000:0000 0A ..."
  // Read in place, without copies of the text or of each port: the table
  // may have thousands of lines and is read again for every check.
  let at = 0;
  while (at < text.length && text.charCodeAt(at) <= 32) at++;
  if (!text.startsWith("sl", at)) return false;
  at = text.indexOf("\n", at);
  while (at >= 0 && at < text.length - 1) {
    const colon = text.indexOf(":", text.indexOf(":", at) + 1);
    if (colon < 0) break;
    let port = 0;
    for (let i = colon + 1; i < colon + 5; i++) {
      const d = hexDigit(text.charCodeAt(i));
      if (d < 0) {
        port = 0;
        break;
      }
      port = port * 16 + d;
    }
    if (port > 0) into.add(port);
    at = text.indexOf("\n", colon);
  }
  return true;
}

/** The value of a hexadecimal digit's char code, or -1. */
function hexDigit(c: number): number {
  if (c >= 48 && c <= 57) return c - 48; // 0-9
  if (c >= 65 && c <= 70) return c - 55; // A-F
  if (c >= 97 && c <= 102) return c - 87; // a-f
  return -1;
}

/**
 * Reads the kernel's TCP tables with `read` (off the JavaScript thread: the
 * kernel walks its whole socket hash, milliseconds), or `undefined`.
 */
async function readBound(
  read: (path: string) => Promise<string>,
): Promise<ReadonlySet<number> | undefined> {
  const ports = new Set<number>();
  try {
    const texts = await Promise.all(PROC_NET_TCP.map(read));
    for (const text of texts) {
      if (!parseProcNetTcp(text, ports)) return undefined;
    }
  } catch {
    return undefined;
  }
  return ports;
}

/** Removes the IPv4-mapped IPv6 prefix: `::ffff:127.0.0.1` → `127.0.0.1`. */
export function normalizeHost(host: string): string {
  return host.startsWith("::ffff:") && host.includes(".")
    ? host.slice(7)
    : host;
}

function connectError(ep: Endpoint, cause: unknown): ConnectionError {
  const why = cause instanceof Error ? cause.message : String(cause);
  return new ConnectionError(
    `Cannot connect to ${formatEndpoint(ep)}: ${why}`,
    { cause },
  );
}

/** Formats an endpoint as `host:port`, bracketing IPv6 addresses. */
export function formatEndpoint(ep: Endpoint): string {
  return ep.hostname.includes(":")
    ? `[${ep.hostname}]:${ep.port}`
    : `${ep.hostname}:${ep.port}`;
}

// The part of the Deno namespace used here, typed locally so that the module
// also type-checks where Deno's types are absent (the npm build).
interface DenoNetAddr {
  transport: string;
  hostname: string;
  port: number;
}
interface DenoConn {
  readonly localAddr: DenoNetAddr;
  readonly remoteAddr: DenoNetAddr;
  read(p: Uint8Array): Promise<number | null>;
  write(p: Uint8Array): Promise<number>;
  setNoDelay?(noDelay?: boolean): void;
  close(): void;
  handshake?(): Promise<unknown>;
}
interface DenoListener extends AsyncIterable<DenoConn> {
  readonly addr: DenoNetAddr;
  close(): void;
}
interface DenoNet {
  readonly build?: { readonly os: string };
  readonly permissions?: {
    querySync?(d: { name: "read"; path: string }): { state: string };
  };
  readTextFile?(path: string): Promise<string>;
  listen(o: { hostname: string; port: number; transport: "tcp" }): DenoListener;
  listenTls(
    o: { hostname: string; port: number; cert: string; key: string },
  ): DenoListener;
  connect(o: { hostname: string; port: number; transport: "tcp" }): Promise<
    DenoConn
  >;
  connectTls(
    o: { hostname: string; port: number; caCerts?: string[] },
  ): Promise<DenoConn>;
}

/** The Deno namespace when running on Deno, else `undefined`. */
export function denoNamespace(): DenoNet | undefined {
  return (globalThis as unknown as { Deno?: DenoNet }).Deno;
}

function addrOf(a: DenoNetAddr): Addr {
  return { hostname: normalizeHost(a.hostname), port: a.port };
}

/** A Web Stream over a `read()` that reuses its buffer. */
function streamOf(conn: Pick<Conn, "read" | "close">): ReadableStream<
  Uint8Array
> {
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const chunk = await conn.read();
      if (chunk === null) controller.close();
      else controller.enqueue(chunk.slice());
    },
    cancel() {
      conn.close();
    },
  });
}

const READ_BUFFER = 64 * 1024;
/** Views of the read buffer kept per connection, one per recent length. */
const VIEWS = 8;

/** A promise that is already resolved, for writes done at once. */
const DONE: Promise<void> = Promise.resolve();

// Deno's own read()/write() with one reused buffer: no per-read allocation,
// a third of the round-trip time of its Web Streams on loopback. Reads and
// writes are not async functions and keep their views of the buffer: on
// the hot path a read or a write costs Deno's own op and one reaction.
function wrapDenoConn(c: DenoConn): Conn {
  try {
    c.setNoDelay?.(true);
  } catch { /* closed already */ }
  let closed = false;
  let buf: Uint8Array | undefined;
  const views: Uint8Array[] = [];
  let nextView = 0;
  const view = (n: number): Uint8Array => {
    const b = buf!;
    if (n === b.length) return b;
    for (let i = 0; i < views.length; i++) {
      if (views[i]!.length === n) return views[i]!;
    }
    const v = b.subarray(0, n);
    views[nextView] = v;
    nextView = (nextView + 1) % VIEWS;
    return v;
  };
  const onRead = (n: number | null) => n === null ? null : view(n);
  const onReadError = (err: unknown) => {
    if (closed) return null;
    throw err;
  };
  // The write in flight (one at a time), and what finishes a short one.
  let writing: Uint8Array | undefined;
  const rest = async (data: Uint8Array, off: number): Promise<void> => {
    while (off < data.length) off += await c.write(data.subarray(off));
  };
  const onWritten = (n: number): Promise<void> => {
    const data = writing!;
    writing = undefined;
    return n >= data.length ? DONE : rest(data, n);
  };
  const onWriteError = (err: unknown): never => {
    writing = undefined;
    throw err;
  };
  let stream: ReadableStream<Uint8Array> | undefined;
  const conn: Conn = {
    localAddr: addrOf(c.localAddr),
    remoteAddr: addrOf(c.remoteAddr),
    read() {
      if (closed) return Promise.resolve(null);
      buf ??= new Uint8Array(READ_BUFFER);
      try {
        return c.read(buf).then(onRead, onReadError);
      } catch (err) {
        return Promise.resolve().then(() => onReadError(err));
      }
    },
    get readable() {
      return stream ??= streamOf(conn);
    },
    write(data) {
      if (writing !== undefined) return rest(data, 0); // not the fast path
      let p: Promise<number>;
      try {
        p = c.write(data);
      } catch (err) {
        return Promise.reject(err);
      }
      writing = data;
      return p.then(onWritten, onWriteError);
    },
    close() {
      if (closed) return;
      closed = true;
      try {
        c.close();
      } catch { /* already closed */ }
    },
  };
  return conn;
}

/**
 * The kernel's tables through `deno`, where they can be read without asking
 * for a permission not granted. One function per namespace, so that every
 * client of a process shares its reads.
 */
function denoTables(
  deno: DenoNet,
): () => Promise<ReadonlySet<number> | undefined> {
  const readable = deno.build?.os === "linux" &&
    deno.readTextFile !== undefined &&
    PROC_NET_TCP.every((path) =>
      deno.permissions?.querySync?.({ name: "read", path }).state === "granted"
    );
  return () =>
    readable
      ? readBound((path) => deno.readTextFile!(path))
      : Promise.resolve(undefined);
}
let denoBoundPorts:
  | (() => Promise<ReadonlySet<number> | undefined>)
  | undefined;

/** A transport over `Deno.listen` and `Deno.connect`. */
export function denoTransport(
  deno: DenoNet | undefined = denoNamespace(),
): Transport {
  if (deno === undefined) throw new TypeError("Deno is not available here");
  const boundPorts = deno === denoNamespace()
    ? denoBoundPorts ??= denoTables(deno)
    : denoTables(deno);
  return {
    name: "deno",
    boundPorts,
    listen(ep, tls) {
      const l = tls === undefined
        ? deno.listen({ ...ep, transport: "tcp" })
        : deno.listenTls({ ...ep, cert: tls.cert, key: tls.key });
      let closed = false;
      return Promise.resolve({
        addr: addrOf(l.addr),
        close() {
          if (closed) return;
          closed = true;
          try {
            l.close();
          } catch { /* already closed */ }
        },
        async *[Symbol.asyncIterator]() {
          try {
            for await (const c of l) yield wrapDenoConn(c);
          } catch (err) {
            if (!closed) throw err;
          }
        },
      });
    },
    async connect(ep, tls) {
      let conn: DenoConn | undefined;
      try {
        if (tls === undefined) {
          conn = await deno.connect({ ...ep, transport: "tcp" });
        } else {
          if (tls.serverName !== undefined) {
            throw new TypeError("serverName is not supported on Deno");
          }
          conn = await deno.connectTls({
            ...ep,
            ...(tls.caCerts !== undefined ? { caCerts: tls.caCerts } : {}),
          });
          await conn.handshake?.();
        }
        return wrapDenoConn(conn);
      } catch (err) {
        try {
          conn?.close();
        } catch { /* already closed */ }
        throw connectError(ep, err);
      }
    },
  };
}

let nodeNet: Promise<typeof NodeNet> | undefined;
function loadNodeNet(): Promise<typeof NodeNet> {
  return nodeNet ??= import("node:net");
}
let nodeFs: Promise<typeof NodeFs> | undefined;
function loadNodeFs(): Promise<typeof NodeFs> {
  return nodeFs ??= import("node:fs");
}
let nodeTls: Promise<typeof NodeTls> | undefined;
function loadNodeTls(): Promise<typeof NodeTls> {
  return nodeTls ??= import("node:tls");
}

/** Chunks waiting to be read are bounded; past this the socket pauses. */
const NODE_QUEUE = 16;

function wrapNodeSocket(s: NodeNet.Socket): Conn {
  s.setNoDelay(true);
  const chunks: Uint8Array[] = [];
  let ended = false;
  let failure: unknown = undefined;
  // The read waiting for the next chunk, if any: a chunk that arrives then
  // goes straight to it, without the queue.
  let reader:
    | { resolve: (c: Uint8Array | null) => void; reject: (e: unknown) => void }
    | undefined;
  const settle = () => {
    const r = reader;
    if (r === undefined) return;
    reader = undefined;
    if (failure !== undefined) r.reject(failure);
    else r.resolve(null);
  };
  s.on("data", (d: Uint8Array) => {
    const r = reader;
    if (r !== undefined && chunks.length === 0) {
      reader = undefined;
      r.resolve(d);
      return;
    }
    chunks.push(d);
    if (chunks.length >= NODE_QUEUE) s.pause();
  });
  s.on("end", () => {
    ended = true;
    settle();
  });
  s.on("close", () => {
    ended = true;
    settle();
  });
  s.on("error", (err) => {
    failure ??= err;
    settle();
  });
  const waitFor = (
    resolve: (c: Uint8Array | null) => void,
    reject: (e: unknown) => void,
  ) => {
    reader = { resolve, reject };
  };
  // Writes: one in flight at a time. A write the kernel took at once (the
  // usual case for a small one on an idle socket) is done when `write()`
  // returns, and costs no promise of its own; the others wait for their
  // callback. Callbacks come in the order of the writes.
  let issued = 0;
  let completed = 0;
  let waiting:
    | { seq: number; resolve: () => void; reject: (e: unknown) => void }
    | undefined;
  const onWritten = (err?: Error | null) => {
    const seq = ++completed;
    const w = waiting;
    if (w === undefined || w.seq !== seq) return;
    waiting = undefined;
    if (err) w.reject(err);
    else w.resolve();
  };
  let stream: ReadableStream<Uint8Array> | undefined;
  const conn: Conn = {
    read() {
      const chunk = chunks.shift();
      if (chunk !== undefined) {
        if (chunks.length < NODE_QUEUE / 2 && s.isPaused()) s.resume();
        return Promise.resolve(chunk);
      }
      if (failure !== undefined) return Promise.reject(failure);
      if (ended) return Promise.resolve(null);
      return new Promise(waitFor);
    },
    get readable() {
      return stream ??= streamOf(conn);
    },
    localAddr: {
      hostname: normalizeHost(s.localAddress ?? ""),
      port: s.localPort ?? 0,
    },
    remoteAddr: {
      hostname: normalizeHost(s.remoteAddress ?? ""),
      port: s.remotePort ?? 0,
    },
    write(data) {
      if (s.destroyed) {
        return Promise.reject(new ConnectionError("The connection is closed"));
      }
      const seq = ++issued;
      s.write(data, onWritten);
      // Written through at once (nothing buffered, the bytes not kept), or
      // failed at once, which "error" reports.
      if (completed >= seq || s.writableLength === 0) return DONE;
      return new Promise((resolve, reject) => {
        waiting = { seq, resolve, reject };
      });
    },
    close() {
      s.destroy();
    },
  };
  return conn;
}

/** The kernel's tables through `node:fs`, on Linux. */
async function nodeBoundPorts(): Promise<ReadonlySet<number> | undefined> {
  const linux = (globalThis as { process?: { platform?: string } }).process
    ?.platform === "linux";
  if (!linux) return undefined;
  const fs = await loadNodeFs();
  return readBound((path) => fs.promises.readFile(path, "latin1"));
}

/** A transport over `node:net`, loaded on first use. */
export function nodeTransport(): Transport {
  return {
    name: "node",
    boundPorts: nodeBoundPorts,
    async listen(ep, tls) {
      const server: NodeNet.Server = tls === undefined
        ? (await loadNodeNet()).createServer({ noDelay: true })
        : (await loadNodeTls()).createServer({ cert: tls.cert, key: tls.key });
      const queue: Conn[] = [];
      let wake: (() => void) | undefined;
      let closed = false;
      server.on("tlsClientError", (_err: unknown, s: NodeNet.Socket) => {
        s.destroy();
      });
      server.on(tls === undefined ? "connection" : "secureConnection", (s) => {
        s.on("error", () => {}); // reported through the readable
        queue.push(wrapNodeSocket(s));
        wake?.();
      });
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen({ port: ep.port, host: ep.hostname }, () => {
          server.off("error", reject);
          resolve();
        });
      });
      const a = server.address() as NodeNet.AddressInfo;
      return {
        addr: { hostname: normalizeHost(a.address), port: a.port },
        close() {
          if (closed) return;
          closed = true;
          server.close();
          wake?.();
        },
        async *[Symbol.asyncIterator]() {
          while (true) {
            const c = queue.shift();
            if (c !== undefined) {
              yield c;
              continue;
            }
            if (closed) return;
            await new Promise<void>((r) => wake = r);
            wake = undefined;
          }
        },
      };
    },
    async connect(ep, tls) {
      const net = await loadNodeNet();
      const tlsLib = tls === undefined ? undefined : await loadNodeTls();
      return await new Promise<Conn>((resolve, reject) => {
        const s = tls === undefined
          ? net.connect({ port: ep.port, host: ep.hostname })
          : tlsLib!.connect({
            port: ep.port,
            host: ep.hostname,
            servername: tls.serverName ??
              (net.isIP(ep.hostname) ? "" : ep.hostname),
            ...(tls.caCerts !== undefined ? { ca: tls.caCerts } : {}),
          });
        s.once("error", (err) => {
          s.destroy();
          reject(connectError(ep, err));
        });
        s.once("close", () => {
          reject(connectError(ep, new Error("closed during the handshake")));
        });
        s.once(tls === undefined ? "connect" : "secureConnect", () => {
          s.removeAllListeners("close");
          s.removeAllListeners("error");
          s.on("error", () => {}); // reported through the readable
          resolve(wrapNodeSocket(s));
        });
      });
    },
  };
}

/**
 * The transport for the runtime this runs on: Deno's own on Deno, `node:net`
 * elsewhere (Node, Bun).
 */
export function defaultTransport(): Transport {
  return denoNamespace() !== undefined ? denoTransport() : nodeTransport();
}

/**
 * The runtime this runs on and its version, for `seaport --version`:
 * `deno 2.9.6`, `bun 1.4.4` or `node v20.20.2`.
 */
export function runtimeVersion(): string {
  const g = globalThis as {
    Deno?: { version?: { deno?: string } };
    Bun?: { version?: string };
    process?: { versions?: { node?: string } };
  };
  if (g.Deno?.version?.deno !== undefined) return `deno ${g.Deno.version.deno}`;
  if (g.Bun?.version !== undefined) return `bun ${g.Bun.version}`;
  const node = g.process?.versions?.node;
  return node === undefined ? "unknown runtime" : `node v${node}`;
}
