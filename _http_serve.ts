/**
 * The runtime seam for HTTP, beside transport.ts: serves one Web-standard
 * handler `(Request) => Promise<Response>` with `Deno.serve` on Deno and
 * `node:http` (or `node:https`) elsewhere (Node, Bun). Node modules are
 * loaded lazily and only off Deno; the handler never knows which runtime
 * serves it.
 *
 * @module
 */
import type * as NodeHttp from "node:http";
import {
  type Addr,
  denoNamespace,
  type Endpoint,
  normalizeHost,
  type TlsServerOptions,
} from "./transport.ts";

/** A Web-standard request handler. */
export type HttpHandler = (request: Request) => Promise<Response>;

/** A running HTTP listener. */
export interface HttpListener {
  /** The bound address (the real port when port 0 was asked for). */
  readonly addr: Addr;
  /**
   * Stops listening and ends open connections; resolves once the listener
   * is closed. Long responses (event streams) should be ended first.
   */
  close(): Promise<void>;
}

/** Largest request head node:http accepts; the handler checks its own limit. */
const NODE_MAX_HEADER = 64 * 1024;
/** How long closing waits for answers under way on node:http, in ms. */
const GRACE = 1000;
/** Largest request body passed on (sign-in forms are tiny). */
const MAX_BODY = 16 * 1024;

// The part of Deno.serve used here, typed locally so that the module also
// type-checks where Deno's types are absent (the npm build).
interface DenoHttpServer {
  readonly addr: { hostname: string; port: number };
  readonly finished: Promise<void>;
  shutdown(): Promise<void>;
}
interface DenoServe {
  serve(
    options: {
      hostname: string;
      port: number;
      cert?: string;
      key?: string;
      signal?: AbortSignal;
      onListen?: (addr: unknown) => void;
      onError?: (err: unknown) => Response;
    },
    handler: (
      request: Request,
      info: { completed?: Promise<void> },
    ) => Promise<Response>,
  ): DenoHttpServer;
}

/**
 * Serves `handler` on `endpoint` (with TLS when `tls` is given) using the
 * runtime's own HTTP server.
 *
 * @param onError Called with errors the handler threw (answered with 500).
 */
export function serveHttp(
  endpoint: Endpoint,
  handler: HttpHandler,
  tls: TlsServerOptions | undefined,
  onError: (err: unknown) => void,
): Promise<HttpListener> {
  const deno = denoNamespace() as unknown as DenoServe | undefined;
  return deno !== undefined && typeof deno.serve === "function"
    ? serveDeno(deno, endpoint, handler, tls, onError)
    : serveNode(endpoint, handler, tls, onError);
}

function internal(): Response {
  return new Response(
    JSON.stringify({ code: "INTERNAL", message: "Internal server error" }),
    { status: 500, headers: { "content-type": "application/json" } },
  );
}

function serveDeno(
  deno: DenoServe,
  ep: Endpoint,
  handler: HttpHandler,
  tls: TlsServerOptions | undefined,
  onError: (err: unknown) => void,
): Promise<HttpListener> {
  const server = deno.serve({
    hostname: ep.hostname,
    port: ep.port,
    ...(tls !== undefined ? { cert: tls.cert, key: tls.key } : {}),
    onListen: () => {},
    onError: (err) => {
      onError(err);
      return internal();
    },
  }, (request) => handler(request));
  let closing: Promise<void> | undefined;
  return Promise.resolve({
    addr: {
      hostname: normalizeHost(server.addr.hostname),
      port: server.addr.port,
    },
    close: () => closing ??= server.shutdown(),
  });
}

async function serveNode(
  ep: Endpoint,
  handler: HttpHandler,
  tls: TlsServerOptions | undefined,
  onError: (err: unknown) => void,
): Promise<HttpListener> {
  const scheme = tls === undefined ? "http" : "https";
  let active = 0;
  let idle: (() => void) | undefined;
  const listener = (
    req: NodeHttp.IncomingMessage,
    res: NodeHttp.ServerResponse,
  ) => {
    active++;
    res.on("close", () => {
      if (--active === 0) idle?.();
    });
    void answer(scheme, req, res, handler).catch((err) => {
      onError(err);
      if (!res.headersSent) res.writeHead(500);
      res.destroy();
    });
  };
  const server: NodeHttp.Server = tls === undefined
    ? (await import("node:http")).createServer(
      { maxHeaderSize: NODE_MAX_HEADER },
      listener,
    )
    : (await import("node:https")).createServer(
      { maxHeaderSize: NODE_MAX_HEADER, cert: tls.cert, key: tls.key },
      listener,
    );
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ port: ep.port, host: ep.hostname }, () => {
      server.off("error", reject);
      resolve();
    });
  });
  server.on("error", onError);
  const a = server.address() as { address: string; port: number };
  let closing: Promise<void> | undefined;
  return {
    addr: { hostname: normalizeHost(a.address), port: a.port },
    // Answers under way (ended streams, woken waits) are written out first,
    // for at most a second; then every connection is closed.
    close: () =>
      closing ??= (async () => {
        const closed = new Promise<void>((r) => server.close(() => r()));
        server.closeIdleConnections();
        if (active > 0) {
          let timer: ReturnType<typeof setTimeout> | undefined;
          await new Promise<void>((resolve) => {
            idle = resolve;
            timer = setTimeout(resolve, GRACE);
          });
          clearTimeout(timer);
        }
        server.closeAllConnections();
        await closed;
      })(),
  };
}

/** Turns a node:http request into a Request and writes back the Response. */
async function answer(
  scheme: string,
  req: NodeHttp.IncomingMessage,
  res: NodeHttp.ServerResponse,
  handler: HttpHandler,
): Promise<void> {
  if (!req.url?.startsWith("/")) {
    res.writeHead(400, { "content-type": "application/json" });
    res.end(JSON.stringify({
      code: "BAD_REQUEST",
      message: "The request target must be a path",
    }));
    return;
  }
  const ac = new AbortController();
  res.on("close", () => ac.abort());
  const headers = new Headers();
  const raw = req.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    try {
      headers.append(raw[i]!, raw[i + 1]!);
    } catch { /* a header the Fetch API cannot hold: ignored */ }
  }
  const method = req.method ?? "GET";
  let body: Uint8Array<ArrayBuffer> | undefined;
  if (method !== "GET" && method !== "HEAD") {
    const chunks: Uint8Array[] = [];
    let size = 0;
    for await (const chunk of req as AsyncIterable<Uint8Array>) {
      size += chunk.length;
      if (size > MAX_BODY) break;
      chunks.push(chunk);
    }
    body = new Uint8Array(Math.min(size, MAX_BODY + 1));
    let off = 0;
    for (const c of chunks) {
      body.set(c, off);
      off += c.length;
    }
  }
  const request = new Request(`${scheme}://localhost${req.url}`, {
    method,
    headers,
    signal: ac.signal,
    ...(body !== undefined ? { body } : {}),
  });
  const response = await handler(request);
  const out: Record<string, string | string[]> = {};
  response.headers.forEach((value, key) => {
    if (key !== "set-cookie") out[key] = value;
  });
  const cookies = response.headers.getSetCookie();
  if (cookies.length > 0) out["set-cookie"] = cookies;
  res.writeHead(response.status, out);
  if (response.body === null) {
    res.end();
    return;
  }
  const reader = response.body.getReader();
  const cancel = () => void reader.cancel().catch(() => {});
  res.on("close", cancel);
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      if (!res.write(value)) {
        await new Promise<void>((resolve) => {
          res.once("drain", resolve);
          res.once("close", resolve);
        });
      }
      if (res.destroyed) break;
    }
    res.end();
  } catch {
    res.destroy();
  }
}
