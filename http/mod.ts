/**
 * The HTTP side of a seaport server: a read-only JSON API with blocking
 * queries, a Server-Sent Events stream, Prometheus metrics, health checks and
 * a live web view, all from the server's own view of the registry (its
 * queries and its allocate/assume/free events). The handler is a Web-standard
 * `(Request) => Promise<Response>`; `_http_serve.ts` serves it on the
 * runtime's own HTTP server.
 *
 * @module
 */
import { serveHttp } from "../_http_serve.ts";
import type { ServerStats } from "../_stats.ts";
import { SeaportError } from "../errors.ts";
import {
  parsePattern,
  type RangeOption,
  type RegistryEventType,
  type ServiceRecord,
} from "../registry.ts";
import type { Addr, TlsServerOptions } from "../transport.ts";
import { COOKIE, TokenCheck } from "./_auth.ts";
import { type Change, ChangeLog } from "./_changes.ts";
import { metrics } from "./_metrics.ts";
import { APP_CSS, APP_JS, pageHtml, signInHtml } from "./_page.ts";

/**
 * Options of the HTTP side (`http` in the server's options). Every limit has
 * a default.
 *
 * @example
 * ```ts
 * import { createServer } from "../mod.ts";
 * const server = createServer({
 *   secret: "beep boop",
 *   http: { port: 0, token: "read-only-token", maxStreams: 10 },
 * });
 * await server.close();
 * ```
 */
export interface HttpOptions {
  /** The TCP port of the HTTP side; 0 picks a free one. */
  port: number;
  /** The address to bind. Default: the main listener's. */
  hostname?: string;
  /**
   * The read-only token every HTTP request must carry (Bearer header or the
   * sign-in cookie). Required when the server has a secret, and never the
   * secret itself.
   */
  token?: string;
  /** The longest `wait` a request may ask for, in ms. Default: 300000 (5 min). */
  maxWait?: number;
  /** Blocking requests (`wait`, `index`) at once. Default: 1000. */
  maxBlocking?: number;
  /** Event streams open at once. Default: 100. */
  maxStreams?: number;
  /** The longest request URL, in bytes. Default: 8192. */
  maxUrlBytes?: number;
  /** The most header bytes a request may carry. Default: 16384. */
  maxHeaderBytes?: number;
  /** Recent events kept for streams that resume. Default: 1000. */
  history?: number;
  /** How often an idle event stream gets a keep-alive comment, in ms. Default: 15000. */
  keepAlive?: number;
}

/** What the HTTP side reads from the server: queries, events and counters. */
export interface RegistryView {
  query(pattern?: string, env?: string): readonly ServiceRecord[];
  on(type: RegistryEventType, fn: (record: ServiceRecord) => void): void;
  off(type: RegistryEventType, fn: (record: ServiceRecord) => void): void;
  connections(): number;
  waitingGets(): number;
  readonly stats: ServerStats;
  readonly range: RangeOption;
  /** Where the registry lives and, on etcd, how that store is doing. */
  store(): StoreState;
}

/** The state of the server's store, for `/metrics` and `/readyz`. */
export type StoreState =
  | { readonly kind: "memory" }
  | {
    readonly kind: "etcd";
    /** etcd answered the last lease keep-alive. */
    readonly reachable: boolean;
    /** When the watch last delivered something (ms since the epoch). */
    readonly lastHeard: number;
    /** Times the view was read again after a broken or compacted watch. */
    readonly resyncs: number;
  };

/** A running HTTP side. */
export interface HttpSide {
  /** The bound address. */
  readonly addr: Addr;
  /** Ends every stream and blocking request, then stops listening. */
  close(): Promise<void>;
}

type Limits = Required<Omit<HttpOptions, "hostname" | "token" | "port">>;

function positive(name: string, v: unknown, dflt: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 1) {
    throw new RangeError(
      `Option "http.${name}" must be a positive integer, got ${v}`,
    );
  }
  return v;
}

/**
 * Checks the HTTP options when the server is created.
 *
 * @throws {TypeError} for a missing port, a secret without a token, or a
 * token equal to the secret; {RangeError} for a bad limit.
 */
export function checkHttpOptions(
  o: HttpOptions,
  secret: string | undefined,
): HttpOptions {
  if (typeof o !== "object" || o === null) {
    throw new TypeError(
      `Option "http" must be an object such as { port: 9091 }`,
    );
  }
  if (!Number.isInteger(o.port) || o.port < 0 || o.port > 65535) {
    throw new RangeError(
      `Option "http.port" must be an integer from 0 to 65535, got ${o.port}`,
    );
  }
  if (
    o.token !== undefined && (typeof o.token !== "string" || o.token === "")
  ) {
    throw new TypeError(`Option "http.token" must be a non-empty string`);
  }
  if (secret !== undefined && o.token === undefined) {
    throw new TypeError(
      `The HTTP side needs a read-only token when the server has a secret ` +
        `(--http-token or $SEAPORT_HTTP_TOKEN, option "http.token"); ` +
        `it never accepts the secret itself`,
    );
  }
  if (secret !== undefined && o.token === secret) {
    throw new TypeError(
      `Option "http.token" must differ from the secret: the token is read-only and may be shared`,
    );
  }
  limits(o);
  return o;
}

function limits(o: HttpOptions): Limits {
  return {
    maxWait: positive("maxWait", o.maxWait, 300_000),
    maxBlocking: positive("maxBlocking", o.maxBlocking, 1000),
    maxStreams: positive("maxStreams", o.maxStreams, 100),
    maxUrlBytes: positive("maxUrlBytes", o.maxUrlBytes, 8192),
    maxHeaderBytes: positive("maxHeaderBytes", o.maxHeaderBytes, 16384),
    history: positive("history", o.history, 1000),
    keepAlive: positive("keepAlive", o.keepAlive, 15_000),
  };
}

/** An HTTP answer that is an error: `{ code, message }` with a status. */
class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

const JSON_TYPE = "application/json; charset=utf-8";
const SECURITY_HEADERS: Record<string, string> = {
  "content-security-policy": "default-src 'none'; script-src 'self'; " +
    "style-src 'self'; connect-src 'self'; img-src 'self' data:; " +
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  "x-frame-options": "DENY",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-resource-policy": "same-origin",
  "permissions-policy": "camera=(), microphone=(), geolocation=()",
};

function json(
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": JSON_TYPE, ...headers },
  });
}

/** Parses `wait`: `30s`, `5m`, `250ms`, or a bare number of seconds. */
function parseWait(raw: string, max: number): number {
  const m = /^(\d{1,9})(ms|s|m)?$/.exec(raw);
  if (m === null) {
    throw new HttpError(
      400,
      "BAD_WAIT",
      `Invalid wait "${raw}": expected a duration such as 30s, 5m or 250ms`,
    );
  }
  const n = Number(m[1]);
  const ms = m[2] === "ms" ? n : m[2] === "m" ? n * 60_000 : n * 1000;
  if (ms > max) {
    throw new HttpError(
      400,
      "BAD_WAIT",
      `Invalid wait "${raw}": at most ${max / 1000}s`,
    );
  }
  return ms;
}

function parseIndex(raw: string, what = "index"): number {
  const n = Number(raw);
  if (!/^\d{1,15}$/.test(raw) || !Number.isSafeInteger(n)) {
    throw new HttpError(
      400,
      "BAD_INDEX",
      `Invalid ${what} "${raw}": expected a non-negative integer`,
    );
  }
  return n;
}

function parseFlag(name: string, raw: string): boolean {
  if (raw === "" || raw === "1" || raw === "true") return true;
  if (raw === "0" || raw === "false") return false;
  throw new HttpError(
    400,
    "BAD_REQUEST",
    `Invalid ${name} "${raw}": expected 1, true, 0 or false`,
  );
}

/** The query parameters, each at most once and each one known. */
function params(url: URL, known: readonly string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const [k, v] of url.searchParams) {
    if (!known.includes(k)) {
      throw new HttpError(
        400,
        "BAD_REQUEST",
        `Unknown parameter "${k}": expected ${known.join(", ")}`,
      );
    }
    if (out.has(k)) {
      throw new HttpError(400, "BAD_REQUEST", `Parameter "${k}" given twice`);
    }
    out.set(k, v);
  }
  return out;
}

/** A query: pattern and environment, checked. */
interface Scope {
  pattern: string | undefined;
  env: string | undefined;
  name: string | undefined;
  test: (r: ServiceRecord) => boolean;
}

function scope(pattern: string | undefined, p: Map<string, string>): Scope {
  const env = p.get("env");
  const all = p.has("all") ? parseFlag("all", p.get("all")!) : false;
  if (all && env !== undefined) {
    throw new HttpError(
      400,
      "BAD_REQUEST",
      `Give "env" or "all", not both`,
    );
  }
  if (pattern === "") pattern = undefined;
  let parsed: ReturnType<typeof parsePattern> | undefined;
  if (pattern !== undefined) {
    try {
      parsed = parsePattern(pattern);
    } catch (err) {
      if (err instanceof SeaportError) {
        throw new HttpError(400, err.code, err.message);
      }
      throw err;
    }
  }
  return {
    pattern,
    env,
    name: parsed?.name,
    test: (r) =>
      (env === undefined || r.env === env) &&
      (parsed === undefined ||
        (r.role === parsed.name &&
          (parsed.range === null || parsed.range.test(r.version)))),
  };
}

/** The key of an answer: its registrations, in order. */
function answerKey(records: readonly ServiceRecord[]): string {
  return records.map((r) => r.id).join(",");
}

const ROUTES: Record<string, string> = {
  "/": "/",
  "/v1/services": "/v1/services",
  "/v1/events": "/v1/events",
  "/v1/pattern": "/v1/pattern",
  "/metrics": "/metrics",
  "/healthz": "/healthz",
  "/readyz": "/readyz",
  "/assets/app.js": "/assets",
  "/assets/app.css": "/assets",
  "/login": "/login",
  "/logout": "/logout",
};
const POST_ROUTES = new Set(["/login", "/logout"]);

interface Stream {
  controller: ReadableStreamDefaultController<Uint8Array>;
  stop: () => void;
}

/** The runtime-free part: a handler over a registry view. */
export class HttpApp {
  #view: RegistryView;
  #limits: Limits;
  #log: ChangeLog;
  #auth: TokenCheck | undefined;
  #secure: boolean;
  #blocking = new Set<() => void>();
  #streams = new Set<Stream>();
  #requests = new Map<string, number>();
  #ticker: ReturnType<typeof setInterval> | undefined;
  #closed = false;
  #started = Date.now();
  #encoder = new TextEncoder();
  /** Names this run of the server in event ids, so a restart is noticed. */
  #run = crypto.getRandomValues(new Uint32Array(1))[0]!.toString(36);

  constructor(view: RegistryView, options: HttpOptions, secure = false) {
    this.#view = view;
    this.#limits = limits(options);
    this.#log = new ChangeLog(view, this.#limits.history);
    this.#auth = options.token === undefined
      ? undefined
      : new TokenCheck(options.token);
    this.#secure = secure;
  }

  /** Answers one request. */
  handle = async (req: Request): Promise<Response> => {
    let route = "other";
    let res: Response;
    try {
      const url = this.#check(req);
      route = ROUTES[url.pathname] ??
        (url.pathname.startsWith("/v1/services/")
          ? "/v1/services/{pattern}"
          : "other");
      res = await this.#route(req, url, route);
    } catch (err) {
      if (!(err instanceof HttpError)) throw err;
      res = json(
        err.status,
        { code: err.code, message: err.message },
        err.headers,
      );
    }
    for (const [k, v] of Object.entries(SECURITY_HEADERS)) {
      res.headers.set(k, v);
    }
    if (this.#secure) {
      res.headers.set("strict-transport-security", "max-age=31536000");
    }
    if (!res.headers.has("cache-control")) {
      res.headers.set("cache-control", "no-store");
    }
    const key = JSON.stringify([route, String(res.status)]);
    this.#requests.set(key, (this.#requests.get(key) ?? 0) + 1);
    if (req.method === "HEAD" && res.body !== null) {
      void res.body.cancel().catch(() => {});
      return new Response(null, { status: res.status, headers: res.headers });
    }
    return res;
  };

  /** Ends every stream and blocking request; answers 503 from now on. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#ticker);
    for (const wake of this.#blocking) wake();
    for (const s of this.#streams) s.stop();
    this.#log.close();
  }

  /** Size limits, before anything else is read. */
  #check(req: Request): URL {
    if (req.url.length > this.#limits.maxUrlBytes) {
      throw new HttpError(
        414,
        "URI_TOO_LONG",
        `The URL is longer than ${this.#limits.maxUrlBytes} bytes`,
      );
    }
    let size = 0;
    req.headers.forEach((v, k) => size += k.length + v.length + 4);
    if (size > this.#limits.maxHeaderBytes) {
      throw new HttpError(
        431,
        "HEADERS_TOO_LARGE",
        `The request headers are larger than ${this.#limits.maxHeaderBytes} bytes`,
      );
    }
    return new URL(req.url);
  }

  async #route(req: Request, url: URL, route: string): Promise<Response> {
    const path = url.pathname;
    const method = req.method;
    // The sign-in and the static assets (no registry data) are open to all.
    const open = route === "/assets" || POST_ROUTES.has(path);
    if (
      !open && this.#auth !== undefined && !(await this.#auth.request(req))
    ) {
      if (path === "/" && method === "GET") return this.#signIn(401, "");
      throw new HttpError(
        401,
        "UNAUTHORIZED",
        "This server needs its HTTP token: send Authorization: Bearer TOKEN",
        { "www-authenticate": 'Bearer realm="seaport"' },
      );
    }
    if (route === "other") {
      throw new HttpError(404, "NOT_FOUND", `No such path "${path}"`);
    }
    const allowed = POST_ROUTES.has(path) ? "POST" : "GET, HEAD";
    if (!allowed.split(", ").includes(method)) {
      throw new HttpError(
        405,
        "METHOD_NOT_ALLOWED",
        `${method} is not allowed on "${path}": use ${allowed}`,
        { allow: allowed },
      );
    }
    if (route === "/assets") return this.#asset(path);
    if (path === "/login") return await this.#login(req, url);
    if (path === "/logout") return this.#logout(req, url);
    if (this.#closed) {
      throw new HttpError(503, "CLOSED", "The server is shutting down");
    }
    switch (route) {
      case "/":
        params(url, []);
        return html(200, pageHtml(this.#auth !== undefined));
      case "/v1/services":
      case "/v1/services/{pattern}":
        return await this.#services(req, url);
      case "/v1/events":
        return this.#events(req, url);
      case "/v1/pattern":
        return this.#pattern(url);
      case "/metrics":
        params(url, []);
        return new Response(this.metrics(), {
          headers: {
            "content-type": "text/plain; version=0.0.4; charset=utf-8",
          },
        });
      case "/healthz":
        params(url, []);
        return json(200, { status: "ok" });
      default: { // "/readyz"
        params(url, []);
        const store = this.#view.store();
        if (store.kind === "etcd" && !store.reachable) {
          return json(503, {
            code: "UNAVAILABLE",
            message:
              "etcd did not answer the last lease keep-alive: new registrations fail; queries answer from the last view",
            store: "etcd",
          });
        }
        return json(200, {
          status: "ready",
          connections: this.#view.connections(),
          store: store.kind,
        });
      }
    }
  }

  /** The metrics page. */
  metrics(): string {
    return metrics({
      records: this.#view.query(),
      range: this.#view.range,
      store: this.#view.store(),
      connections: this.#view.connections(),
      waitingGets: this.#view.waitingGets(),
      stats: this.#view.stats,
      events: this.#log.counts,
      index: this.#log.index,
      http: {
        requests: this.#requests,
        blocking: this.#blocking.size,
        streams: this.#streams.size,
      },
      startTime: this.#started,
    });
  }

  #asset(path: string): Response {
    const [body, type] = path === "/assets/app.js"
      ? [APP_JS, "text/javascript; charset=utf-8"]
      : [APP_CSS, "text/css; charset=utf-8"];
    return new Response(body, {
      headers: { "content-type": type, "cache-control": "no-cache" },
    });
  }

  #signIn(status: number, error: string): Response {
    return html(status, signInHtml(error));
  }

  /** Refuses a form posted from another origin. */
  #sameOrigin(req: Request, url: URL): void {
    const origin = req.headers.get("origin");
    const host = req.headers.get("host") ?? url.host;
    if (origin !== null && origin !== "null") {
      let h: string;
      try {
        h = new URL(origin).host;
      } catch {
        h = "";
      }
      if (h !== host) {
        throw new HttpError(
          403,
          "FORBIDDEN",
          `Form posted from another origin ("${origin}")`,
        );
      }
    }
  }

  async #login(req: Request, url: URL): Promise<Response> {
    params(url, []);
    this.#sameOrigin(req, url);
    if (this.#auth === undefined) return redirect("/");
    const type = req.headers.get("content-type") ?? "";
    if (!type.startsWith("application/x-www-form-urlencoded")) {
      throw new HttpError(
        415,
        "BAD_REQUEST",
        "Sign in with a form (application/x-www-form-urlencoded) carrying token",
      );
    }
    const text = await req.text();
    if (text.length > 4096) {
      throw new HttpError(413, "BAD_REQUEST", "The form is too large");
    }
    const token = new URLSearchParams(text).get("token") ?? "";
    if (!(await this.#auth.token(token))) {
      return this.#signIn(401, "That is not this server's HTTP token.");
    }
    const value = await this.#auth.cookieValue();
    const res = redirect("/");
    res.headers.append(
      "set-cookie",
      `${COOKIE}=${value}; Path=/; HttpOnly; SameSite=Strict${
        this.#secure ? "; Secure" : ""
      }`,
    );
    return res;
  }

  #logout(req: Request, url: URL): Response {
    params(url, []);
    this.#sameOrigin(req, url);
    const res = redirect("/");
    res.headers.append(
      "set-cookie",
      `${COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0`,
    );
    return res;
  }

  /**
   * Checks a pattern with the registry's parser and answers 200 either way,
   * `{ pattern, name, range }` or `{ pattern, error: { code, message } }`: a
   * form can check what is typed without its console reporting failed loads.
   */
  #pattern(url: URL): Response {
    const p = params(url, ["pattern"]);
    const pattern = p.get("pattern");
    if (pattern === undefined) {
      throw new HttpError(
        400,
        "BAD_REQUEST",
        `Missing the "pattern" parameter`,
      );
    }
    try {
      const { name, range } = parsePattern(pattern);
      return json(200, { pattern, name, range: range?.range ?? "*" });
    } catch (err) {
      if (!(err instanceof SeaportError)) throw err;
      return json(200, {
        pattern,
        error: { code: err.code, message: err.message },
      });
    }
  }

  async #services(req: Request, url: URL): Promise<Response> {
    const p = params(url, ["pattern", "env", "all", "wait", "index"]);
    let pattern = p.get("pattern");
    if (url.pathname.startsWith("/v1/services/")) {
      if (pattern !== undefined) {
        throw new HttpError(
          400,
          "BAD_REQUEST",
          `Give the pattern in the path or as "pattern", not both`,
        );
      }
      try {
        pattern = decodeURIComponent(url.pathname.slice(13));
      } catch {
        throw new HttpError(400, "BAD_REQUEST", "The path is not valid UTF-8");
      }
      if (pattern === "") {
        throw new HttpError(400, "INVALID_PATTERN", "The pattern is empty");
      }
    }
    const s = scope(pattern, p);
    const index = p.has("index") ? parseIndex(p.get("index")!) : undefined;
    const wait = p.has("wait")
      ? parseWait(p.get("wait")!, this.#limits.maxWait)
      : index !== undefined
      ? this.#limits.maxWait
      : undefined;
    const now = () => this.#view.query(s.pattern, s.env);
    const answer = (records: readonly ServiceRecord[]) =>
      json(200, records, { "x-seaport-index": String(this.#log.index) });
    const first = now();
    if (wait === undefined) return answer(first);
    if (index !== undefined ? index !== this.#log.index : first.length > 0) {
      return answer(first);
    }
    if (this.#blocking.size >= this.#limits.maxBlocking) {
      throw new HttpError(
        429,
        "LIMIT",
        `Too many blocking requests: at most ${this.#limits.maxBlocking} at once`,
        { "retry-after": "1" },
      );
    }
    const before = answerKey(first);
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        stop();
        req.signal.removeEventListener("abort", done);
        this.#blocking.delete(done);
        resolve();
      };
      const timer = setTimeout(done, wait);
      const stop = this.#log.listen((c) => {
        if (!s.test(c.record)) return;
        const next = now();
        const changed = index !== undefined
          ? answerKey(next) !== before
          : next.length > 0;
        if (changed) done();
      });
      req.signal.addEventListener("abort", done);
      this.#blocking.add(done);
    });
    // Records and index read together: later changes may have come since
    // the one that woke this request, and the index must cover exactly these.
    return answer(now());
  }

  #events(req: Request, url: URL): Response {
    const p = params(url, ["pattern", "env", "all", "snapshot"]);
    const s = scope(p.get("pattern"), p);
    const snapshot = p.has("snapshot")
      ? parseFlag("snapshot", p.get("snapshot")!)
      : false;
    const last = this.#lastEventId(req.headers.get("last-event-id"));
    if (this.#streams.size >= this.#limits.maxStreams) {
      throw new HttpError(
        429,
        "LIMIT",
        `Too many event streams: at most ${this.#limits.maxStreams} at once`,
        { "retry-after": "1" },
      );
    }
    const log = this.#log;
    const enc = this.#encoder;
    const send = (
      c: ReadableStreamDefaultController<Uint8Array>,
      text: string,
    ) => c.enqueue(enc.encode(text));
    const run = this.#run;
    const event = (type: string, data: unknown, id?: number) =>
      `${id !== undefined ? `id: ${run}-${id}\n` : ""}event: ${type}\ndata: ${
        JSON.stringify(data)
      }\n\n`;
    const change = (c: Change) =>
      event(c.type, {
        type: c.type,
        index: c.index,
        time: c.time,
        record: c.record,
      }, c.index);
    const snap = () => {
      const records = this.#view.query(s.pattern, s.env);
      const since: Record<string, number> = {};
      for (const r of records) {
        const t = log.since(r.id);
        if (t !== undefined) since[r.id] = t;
      }
      return { index: log.index, records, since, ranges: this.#view.range };
    };
    let stream: Stream | undefined;
    const body = new ReadableStream<Uint8Array>({
      start: (controller) => {
        let stopped = false;
        const unlisten = log.listen((c) => {
          if (!s.test(c.record)) return;
          if ((controller.desiredSize ?? 0) < -1000) {
            stop(); // a reader that does not keep up
            return;
          }
          send(controller, change(c));
        });
        const stop = () => {
          if (stopped) return;
          stopped = true;
          unlisten();
          this.#streams.delete(stream!);
          this.#tick();
          try {
            controller.close();
          } catch { /* cancelled already */ }
        };
        stream = { controller, stop };
        this.#streams.add(stream);
        this.#tick();
        send(controller, "retry: 1000\n\n");
        if (last !== undefined) {
          const missed = last.run === run ? log.after(last.index) : undefined;
          if (missed === undefined) {
            send(
              controller,
              event("reset", {
                reason: last.run !== run
                  ? "the server restarted: its history starts again"
                  : "events after this id are no longer in the history",
                lastEventId: last.raw,
                oldest: log.oldest,
                index: log.index,
              }),
            );
            if (snapshot) {
              send(controller, event("snapshot", snap(), log.index));
            }
          } else {
            for (const c of missed) {
              if (s.test(c.record)) send(controller, change(c));
            }
          }
        } else if (snapshot) {
          send(controller, event("snapshot", snap(), log.index));
        } else {
          send(controller, event("ready", { index: log.index }));
        }
      },
      cancel: () => stream?.stop(),
    });
    return new Response(body, {
      headers: {
        "content-type": "text/event-stream; charset=utf-8",
        "cache-control": "no-store",
        "x-seaport-index": String(log.index),
        "x-accel-buffering": "no",
      },
    });
  }

  /** `RUN-INDEX` as this server sends, or a bare index (of this run). */
  #lastEventId(
    raw: string | null,
  ): { run: string; index: number; raw: string } | undefined {
    if (raw === null || raw === "") return undefined;
    const m = /^(?:([0-9a-z]{1,16})-)?(\d{1,15})$/.exec(raw);
    if (m === null) {
      throw new HttpError(
        400,
        "BAD_INDEX",
        `Invalid Last-Event-ID "${raw}": expected an id this server sent`,
      );
    }
    return { run: m[1] ?? this.#run, index: Number(m[2]), raw };
  }

  /** One shared keep-alive timer while streams are open. */
  #tick(): void {
    if (this.#streams.size === 0) {
      clearInterval(this.#ticker);
      this.#ticker = undefined;
    } else if (this.#ticker === undefined) {
      const ping = this.#encoder.encode(": keep-alive\n\n");
      this.#ticker = setInterval(() => {
        for (const s of this.#streams) {
          try {
            s.controller.enqueue(ping);
          } catch { /* closed */ }
        }
      }, this.#limits.keepAlive);
    }
  }
}

function html(status: number, body: string): Response {
  return new Response(body, {
    status,
    headers: { "content-type": "text/html; charset=utf-8" },
  });
}

function redirect(to: string): Response {
  return new Response(null, { status: 303, headers: { location: to } });
}

/**
 * Starts the HTTP side: the handler over `view`, served on the runtime's own
 * HTTP server (HTTPS with `tls`).
 */
export async function startHttp(
  view: RegistryView,
  options: HttpOptions,
  where: { hostname: string | undefined; tls: TlsServerOptions | undefined },
  onError: (err: unknown) => void = () => {},
): Promise<HttpSide> {
  const app = new HttpApp(view, options, where.tls !== undefined);
  const serve = (hostname: string) =>
    serveHttp({ hostname, port: options.port }, app.handle, where.tls, onError);
  let listener;
  try {
    if (where.hostname !== undefined) listener = await serve(where.hostname);
    else {
      try {
        listener = await serve("::");
      } catch {
        listener = await serve("0.0.0.0");
      }
    }
  } catch (err) {
    app.close();
    const why = err instanceof Error ? err.message : String(err);
    throw new Error(
      `Cannot serve HTTP on ${where.hostname ?? "*"}:${options.port}: ${why}`,
      { cause: err },
    );
  }
  const l = listener;
  return {
    addr: l.addr,
    async close() {
      app.close();
      await l.close();
    },
  };
}
