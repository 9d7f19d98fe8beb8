/**
 * Test helpers shared by every suite: transports to run each suite with,
 * disposable servers and clients, and waits that always time out.
 *
 * @module
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { connect, createServer } from "../mod.ts";
import type { ConnectOptions, Ports, Server, ServerOptions } from "../mod.ts";
import {
  type Conn,
  defaultTransport,
  denoNamespace,
  denoTransport,
  type Listener,
  nodeTransport,
  type Transport,
} from "../transport.ts";

/** Reconnect quickly: for tests that stop and restart servers. */
export const fast = { reconnectDelay: 20, maxReconnectDelay: 100 };

/** A free port: bound once and released. */
export async function freePort(t: Transport): Promise<number> {
  const l = await t.listen({ hostname: "127.0.0.1", port: 0 });
  const port = l.addr.port;
  l.close();
  return port;
}

/**
 * The first of `n` consecutive ports that are free on loopback now, between
 * the default range (10000-20000) and the usual ephemeral ports (32768 up).
 */
export async function freeBlock(t: Transport, n: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * (12_000 - n));
    const held: Listener[] = [];
    try {
      for (let i = 0; i < n; i++) {
        held.push(await t.listen({ hostname: "127.0.0.1", port: base + i }));
      }
      return base;
    } catch {
      // taken; try another block
    } finally {
      for (const l of held) l.close();
    }
  }
  throw new Error(`No ${n} consecutive free ports found`);
}

/** The runtime the tests run on. */
export const runtime: "deno" | "node" = denoNamespace() ? "deno" : "node";

/** Every transport available here: Deno's own and node:net on Deno. */
export function transports(): Transport[] {
  return runtime === "deno"
    ? [denoTransport(), nodeTransport()]
    : [nodeTransport()];
}

/** Rejects with a clear message when `promise` takes longer than `ms`. */
export function within<T>(
  promise: Promise<T>,
  ms: number,
  what: string,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`Timed out after ${ms} ms waiting for ${what}`)),
      ms,
    );
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Waits until `check()` returns something other than `undefined`/`false`,
 * checking after every macrotask turn (for state that has no event), and
 * fails after `ms`.
 */
export async function until<T>(
  check: () => T | undefined | false,
  what: string,
  ms = 5000,
): Promise<T> {
  const deadline = Date.now() + ms;
  while (true) {
    const v = check();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) {
      throw new Error(`Timed out after ${ms} ms waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Resolves with the arguments of the next `event` emitted by `target`. */
export function next<A extends unknown[]>(
  target: {
    on(event: string, fn: (...args: A) => void): unknown;
    off(event: string, fn: (...args: A) => void): unknown;
  },
  event: string,
  ms = 5000,
): Promise<A> {
  let fn: (...args: A) => void = () => {};
  const p = new Promise<A>((resolve) => {
    fn = (...args: A) => {
      target.off(event, fn);
      resolve(args);
    };
    target.on(event, fn);
  });
  return within(p, ms, `event "${event}"`).finally(() => target.off(event, fn));
}

/**
 * Waits until the async `check()` resolves true (checked every 10 ms),
 * failing after `ms`.
 */
export async function poll(
  check: () => Promise<boolean>,
  what: string,
  ms = 5000,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) {
      throw new Error(`Timed out after ${ms} ms waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * The etcd endpoints the server/client suites run against, from
 * `$SEAPORT_TEST_ETCD` (set by tests/etcd_suites_test.ts, which starts one
 * etcd member and runs those suites again); `undefined`: the in-memory store.
 */
export const testEtcd: string | undefined = process.env.SEAPORT_TEST_ETCD ||
  undefined;

let registries = 0;

/**
 * The store options of one registry for a test: none (the in-memory store),
 * or under `$SEAPORT_TEST_ETCD` the etcd store with a prefix of its own, so
 * tests never share a registry. Give the same object to every server of one
 * registry (a server restarted, several servers).
 */
export function testStore(): Pick<ServerOptions, "etcd"> {
  if (testEtcd === undefined) return {};
  const prefix = `/seaport-test/${process.pid}-${++registries}-${
    Math.random().toString(36).slice(2, 8)
  }/`;
  return { etcd: { endpoints: testEtcd, prefix } };
}

/**
 * The CLI options that give a server started by `seaport PORT` the store of
 * {@linkcode testStore}: none, or `--etcd URLS --etcd-prefix P`.
 */
export function testStoreArgs(): string[] {
  const { etcd } = testStore();
  if (etcd === undefined) return [];
  return ["--etcd", String(etcd.endpoints), "--etcd-prefix", etcd.prefix!];
}

/** A listening server that closes itself on dispose. */
export interface TestServer extends AsyncDisposable {
  readonly server: Server;
  readonly port: number;
  /** Connects a client to this server (closed with the server). */
  client(options?: ConnectOptions): Ports;
}

/**
 * A transport that connects wherever `to.port` says now: the clients of a
 * server that died are sent to another one, as a client with a server list
 * would go.
 */
export function redirect(to: { port: number }): Transport {
  const t = defaultTransport();
  return {
    name: t.name,
    listen: (ep, tls) => t.listen(ep, tls),
    connect: (ep, tls) => t.connect({ ...ep, port: to.port }, tls),
  };
}

/** Starts a server on 127.0.0.1 and a free port. */
export async function serve(
  transport: Transport,
  options: ServerOptions = {},
  port = 0,
): Promise<TestServer> {
  const server = createServer({ ...testStore(), ...options, transport });
  const addr = await server.listen(port, "127.0.0.1");
  const clients: Ports[] = [];
  return {
    server,
    port: addr.port,
    client(opts = {}) {
      const c = connect("127.0.0.1", addr.port, { transport, ...opts });
      clients.push(c);
      return c;
    },
    async [Symbol.asyncDispose]() {
      await Promise.all(clients.map((c) => c.close()));
      await server.close();
    },
  };
}

/** What {@linkcode tapped} reports of every connection it makes. */
export interface Taps {
  /** Each chunk read (`null` at the end), or the error the read failed with. */
  read?(chunk: Uint8Array | null, error?: unknown): void;
  /** Each chunk written. */
  write?(data: Uint8Array): void;
}

/** `t`, with every client connection's reads and writes reported to `taps`. */
export function tapped(t: Transport, taps: Taps): Transport {
  return {
    name: t.name,
    listen: (ep, tls) => t.listen(ep, tls),
    async connect(ep, tls) {
      const conn = await t.connect(ep, tls);
      const wrapped: Conn = {
        localAddr: conn.localAddr,
        remoteAddr: conn.remoteAddr,
        get readable() {
          return conn.readable;
        },
        async read() {
          let chunk: Uint8Array | null;
          try {
            chunk = await conn.read();
          } catch (err) {
            taps.read?.(null, err);
            throw err;
          }
          taps.read?.(chunk);
          return chunk;
        },
        write(data) {
          taps.write?.(data);
          return conn.write(data);
        },
        close: () => conn.close(),
      };
      return wrapped;
    },
  };
}

/**
 * A self-signed certificate for the names in `san`. It is marked as not a CA:
 * rustls (Deno's TLS) refuses a CA certificate as a server's own
 * (`CaUsedAsEndEntity`), and `openssl req -x509` makes a CA one by default.
 */
export function makeCertificate(
  san: string,
): { cert: string; key: string } | string {
  const dir = mkdtempSync(join(tmpdir(), "seaport-tls-"));
  try {
    const out = spawnSync("openssl", [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-days",
      "1",
      "-subj",
      "/CN=localhost",
      "-addext",
      `subjectAltName=${san}`,
      "-addext",
      "basicConstraints=critical,CA:FALSE",
      "-keyout",
      join(dir, "key.pem"),
      "-out",
      join(dir, "cert.pem"),
    ], { encoding: "utf8" });
    if (out.error !== undefined) {
      return `openssl is not available (${out.error.message})`;
    }
    if (out.status !== 0) return `openssl failed: ${out.stderr}`;
    return {
      cert: readFileSync(join(dir, "cert.pem"), "utf8"),
      key: readFileSync(join(dir, "key.pem"), "utf8"),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Skips a test, saying why on stdout too (node:test keeps it quiet). */
export function skip(t: { skip(why: string): void }, why: string): void {
  console.log(`SKIP: ${why}`);
  t.skip(why);
}
