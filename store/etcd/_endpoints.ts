/**
 * One request to etcd's JSON gateway, over several endpoints: the endpoint
 * that answered last is asked first; a refused connection (or a 503, for a
 * request that is safe to repeat) moves on to the next one, round after round,
 * until the request timeout. Every request settles within that timeout, as
 * an answer or an error. With a user and password, the client authenticates
 * first and again when etcd says the token is no longer valid.
 *
 * @module
 */
import { AuthError, UnavailableError } from "../../errors.ts";
import { EtcdError, GRPC } from "./_errors.ts";
import type { HttpClient } from "./_http.ts";

/** A JSON object as the gateway sends it. */
export type Json = Record<string, unknown>;

/** How one request behaves. */
export interface CallOptions {
  /**
   * Whether sending the request twice does no harm (reads, keep-alives,
   * revokes): only those are retried on another endpoint after a 503 or a
   * connection lost mid-request.
   */
  idempotent: boolean;
  /** Send no auth token (the authenticate call itself). */
  anonymous?: boolean;
}

/** What the pool needs to know. */
export interface EndpointsOptions {
  endpoints: readonly string[];
  requestTimeout: number;
  http: HttpClient;
  username?: string | undefined;
  password?: string | undefined;
}

/** Validates and normalises endpoint URLs (`http(s)://host:port`). */
export function parseEndpoints(
  endpoints: string | readonly string[],
): string[] {
  const list = typeof endpoints === "string"
    ? endpoints.split(",").map((s) => s.trim()).filter((s) => s !== "")
    : [...endpoints];
  if (list.length === 0) {
    throw new TypeError('"endpoints" must name at least one etcd URL');
  }
  return list.map((e) => {
    let url: URL;
    try {
      url = new URL(e);
    } catch {
      throw new TypeError(
        `Invalid etcd endpoint "${e}": expected a URL like http://127.0.0.1:2379`,
      );
    }
    if (
      (url.protocol !== "http:" && url.protocol !== "https:") ||
      (url.pathname !== "/" && url.pathname !== "") || url.search !== ""
    ) {
      throw new TypeError(
        `Invalid etcd endpoint "${e}": expected http(s)://host:port with no path`,
      );
    }
    return `${url.protocol}//${url.host}`;
  });
}

/** The endpoint pool with failover, timeouts and authentication. */
export class Endpoints {
  readonly list: readonly string[];
  readonly requestTimeout: number;
  #http: HttpClient;
  #current = 0;
  #closed = new AbortController();
  #username: string | undefined;
  #password: string | undefined;
  #token: Promise<string> | undefined;

  constructor(options: EndpointsOptions) {
    this.list = options.endpoints;
    this.requestTimeout = options.requestTimeout;
    this.#http = options.http;
    this.#username = options.username;
    this.#password = options.password;
  }

  /** Whether close() was called. */
  get closed(): boolean {
    return this.#closed.signal.aborted;
  }

  /** The signal aborted on close(). */
  get closedSignal(): AbortSignal {
    return this.#closed.signal;
  }

  /** POSTs `body` to `path` and returns the JSON answer. */
  call(path: string, body: unknown, options: CallOptions): Promise<Json> {
    return this.#request(path, body, options, async (res) => {
      const v: unknown = await res.json();
      if (typeof v !== "object" || v === null) {
        throw new EtcdError(`etcd answered ${path} with non-JSON`, 0, 200);
      }
      return v as Json;
    });
  }

  /**
   * POSTs `body` to `path` and returns the open answer for its body to be
   * streamed; `signal` aborts the stream later. The timeout covers the answer's
   * head only.
   */
  open(path: string, body: unknown, signal: AbortSignal): Promise<Response> {
    return this.#request(
      path,
      body,
      { idempotent: true },
      (res) => Promise.resolve(res),
      signal,
    );
  }

  /** Aborts every request in flight and releases connections. */
  close(): void {
    this.#closed.abort();
    this.#http.close();
  }

  async #request<T>(
    path: string,
    body: unknown,
    options: CallOptions,
    read: (res: Response) => Promise<T>,
    signal?: AbortSignal,
  ): Promise<T> {
    const text = JSON.stringify(body);
    const started = Date.now();
    const deadline = started + this.requestTimeout;
    const failures = new Map<string, string>();
    let lastError: unknown;
    let reauthenticated = false;
    const n = this.list.length;
    for (let round = 0;; round++) {
      const first = this.#current;
      for (let i = 0; i < n; i++) {
        const index = (first + i) % n;
        const endpoint = this.list[index]!;
        if (this.closed) throw this.#closedError(path);
        const remaining = deadline - Date.now();
        if (remaining <= 0) break;
        // A request that is safe to repeat shares what is left of its time
        // with the endpoints not yet tried this round, so a member that
        // hangs (stopped) leaves time to ask the next one. A write gets all
        // of it: once sent, it is never sent again.
        const budget = options.idempotent
          ? Math.ceil(remaining / (n - i))
          : remaining;
        const headers: Record<string, string> = {
          "content-type": "application/json",
        };
        if (this.#username !== undefined && !options.anonymous) {
          headers.authorization = await this.#authToken();
        }
        const ctl = new AbortController();
        let timedOut = false;
        const timer = setTimeout(() => {
          timedOut = true;
          ctl.abort();
        }, budget);
        const stop = () => ctl.abort();
        this.#closed.signal.addEventListener("abort", stop);
        signal?.addEventListener("abort", stop);
        let keep = false;
        try {
          const res = await this.#http.fetch(endpoint + path, {
            method: "POST",
            headers,
            body: text,
            signal: ctl.signal,
          });
          if (res.ok) {
            const v = await read(res);
            this.#current = index;
            // A stream stays abortable by close() and by its own signal,
            // which the caller aborts when it is done with the stream.
            keep = signal !== undefined;
            return v;
          }
          const err = await errorOf(res, path);
          if (isUnavailable(err)) {
            lastError = err;
            failures.set(endpoint, err.message);
            if (!options.idempotent) {
              this.#current = (index + 1) % n;
              throw this.#unavailable(path, failures, err, started, true);
            }
            continue;
          }
          if (
            err.grpcCode === GRPC.UNAUTHENTICATED &&
            this.#username !== undefined && !reauthenticated
          ) {
            // The token expired or the member restarted: authenticate again
            // and repeat the request on the same endpoint.
            reauthenticated = true;
            this.#token = undefined;
            i--;
            continue;
          }
          throw authError(err) ?? err;
        } catch (err) {
          if (err instanceof EtcdError || err instanceof AuthError) throw err;
          if (err instanceof UnavailableError) throw err;
          if (this.closed || signal?.aborted) throw this.#closedError(path);
          if (timedOut) {
            // A member that does not answer (stopped, or without quorum):
            // the next request starts with the next endpoint.
            this.#current = (index + 1) % n;
            failures.set(endpoint, `no answer within ${budget} ms`);
            if (!options.idempotent) {
              throw this.#unavailable(path, failures, err, started, true);
            }
            lastError = err;
            continue;
          }
          lastError = err;
          failures.set(endpoint, describe(err));
          if (!options.idempotent && !refused(err)) {
            this.#current = (index + 1) % n;
            throw this.#unavailable(path, failures, err, started, true);
          }
        } finally {
          clearTimeout(timer);
          const closed = this.#closed.signal;
          if (!keep) {
            closed.removeEventListener("abort", stop);
            signal?.removeEventListener("abort", stop);
          } else {
            signal?.addEventListener(
              "abort",
              () => closed.removeEventListener("abort", stop),
              { once: true },
            );
          }
        }
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0 || this.closed) break;
      // Every endpoint failed: wait a little (an election takes about a
      // second) and go round again until the deadline.
      await sleep(
        Math.min(25 * 2 ** round, 250, remaining),
        this.#closed.signal,
      );
    }
    if (this.closed) throw this.#closedError(path);
    throw this.#unavailable(path, failures, lastError, started);
  }

  #authToken(): Promise<string> {
    this.#token ??= this.call("/v3/auth/authenticate", {
      name: this.#username,
      password: this.#password ?? "",
    }, { idempotent: true, anonymous: true }).then((r) => {
      if (typeof r.token !== "string" || r.token === "") {
        throw new AuthError(
          `etcd gave no token for user "${this.#username}": is auth enabled?`,
        );
      }
      return r.token;
    });
    const p = this.#token;
    p.catch(() => {
      if (this.#token === p) this.#token = undefined;
    });
    return p;
  }

  #unavailable(
    path: string,
    failures: Map<string, string>,
    cause: unknown,
    started: number,
    maybeApplied = false,
  ): UnavailableError {
    const tried = [...failures].map(([e, why]) => `${e} (${why})`).join(", ");
    const ms = Date.now() - started;
    // A write that reached etcd and got no answer (or a 503) may or may
    // not have been applied; it is never sent again.
    const applied = maybeApplied
      ? "; the write may or may not have taken effect"
      : "";
    return new UnavailableError(
      `etcd is unavailable: ${path} failed after ${ms} ms; tried ${
        tried || this.list.join(", ")
      }${applied}`,
      { cause },
    );
  }

  #closedError(path: string): UnavailableError {
    return new UnavailableError(`etcd client closed during ${path}`);
  }
}

/** The gateway's error answer as an EtcdError. */
async function errorOf(res: Response, path: string): Promise<EtcdError> {
  const text = await res.text().catch(() => "");
  let grpcCode = 0;
  let message = text.trim() || res.statusText;
  try {
    const o = JSON.parse(text) as Json;
    if (typeof o.code === "number") grpcCode = o.code;
    if (typeof o.message === "string") message = o.message;
    else if (typeof o.error === "string") message = o.error;
  } catch {
    // not JSON: keep the text (e.g. "Not Found" for an unknown path)
  }
  if (grpcCode === 0 && res.status === 503) grpcCode = GRPC.UNAVAILABLE;
  return new EtcdError(
    `etcd refused ${path}: ${message} (HTTP ${res.status})`,
    grpcCode,
    res.status,
  );
}

function isUnavailable(err: EtcdError): boolean {
  return err.grpcCode === GRPC.UNAVAILABLE || err.status === 503;
}

/** etcd's auth refusals as AuthError; undefined for the others. */
function authError(err: EtcdError): AuthError | undefined {
  const m = err.message;
  if (
    err.grpcCode === GRPC.UNAUTHENTICATED ||
    err.grpcCode === GRPC.PERMISSION_DENIED ||
    /authentication failed|user name is empty|auth token/.test(m)
  ) {
    return new AuthError(m, { cause: err });
  }
  return undefined;
}

/** Whether the connection was refused, so the request never reached etcd. */
function refused(err: unknown): boolean {
  for (let e = err, depth = 0; e !== undefined && depth < 5; depth++) {
    const code = (e as { code?: unknown })?.code;
    const message = e instanceof Error ? e.message : String(e);
    if (code === "ECONNREFUSED" || /refused/i.test(message)) return true;
    e = (e as { cause?: unknown })?.cause;
  }
  return false;
}

function describe(err: unknown): string {
  const parts: string[] = [];
  for (let e = err, depth = 0; e !== undefined && depth < 3; depth++) {
    parts.push(e instanceof Error ? e.message : String(e));
    e = (e as { cause?: unknown })?.cause;
  }
  return parts.join(": ");
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener("abort", done);
  });
}
