/**
 * The one runtime-specific part of the etcd client: `fetch` that trusts a
 * custom CA for `https://` endpoints. Without a CA every runtime uses its own
 * global `fetch`. With one:
 *
 * - Deno: `fetch(url, { client: Deno.createHttpClient({ caCerts }) })`.
 * - Bun: `fetch(url, { tls: { ca } })`.
 * - Node: its `fetch` (undici) takes no CA and Node 20 offers no importable
 *   undici `Agent`, so requests go through `node:https` with an `Agent` that
 *   holds the CA, and the answer is wrapped in a Web `Response`.
 *
 * @module
 */
import type * as NodeHttps from "node:https";
import type * as NodeStream from "node:stream";

/** What the client sends: always a POST (or GET) with a JSON body. */
export interface HttpRequest {
  method: "GET" | "POST";
  headers: Record<string, string>;
  body?: string;
  signal: AbortSignal;
}

/** `fetch`, bound to the client's TLS settings. */
export interface HttpClient {
  /** Sends a request; rejects when no answer's head arrives. */
  fetch(url: string, req: HttpRequest): Promise<Response>;
  /** Releases pooled connections. */
  close(): void;
}

interface DenoHttp {
  createHttpClient(options: { caCerts: string[] }): { close(): void };
}

/** An HTTP client that trusts `ca` (PEM) besides the system's roots. */
export function httpClient(ca?: string): HttpClient {
  const plain: HttpClient = {
    fetch: (url, req) => fetch(url, req),
    close() {},
  };
  if (ca === undefined) return plain;
  const g = globalThis as unknown as { Deno?: DenoHttp; Bun?: unknown };
  if (g.Deno !== undefined) {
    const client = g.Deno.createHttpClient({ caCerts: [ca] });
    return {
      fetch: (url, req) => fetch(url, { ...req, client } as RequestInit),
      close: () => client.close(),
    };
  }
  if (g.Bun !== undefined) {
    return {
      fetch: (url, req) => fetch(url, { ...req, tls: { ca } } as RequestInit),
      close() {},
    };
  }
  return nodeHttps(ca, plain);
}

function nodeHttps(ca: string, plain: HttpClient): HttpClient {
  let agent: NodeHttps.Agent | undefined;
  let modules: Promise<[typeof NodeHttps, typeof NodeStream]> | undefined;
  return {
    async fetch(url, req) {
      if (!url.startsWith("https:")) return plain.fetch(url, req);
      modules ??= Promise.all([import("node:https"), import("node:stream")]);
      const [https, stream] = await modules;
      agent ??= new https.Agent({ ca, keepAlive: true });
      const a = agent;
      return await new Promise<Response>((resolve, reject) => {
        const r = https.request(url, {
          method: req.method,
          headers: req.headers,
          agent: a,
          signal: req.signal,
        }, (res) => {
          const headers = new Headers();
          for (const [k, v] of Object.entries(res.headers)) {
            if (typeof v === "string") headers.set(k, v);
          }
          const body = stream.Readable.toWeb(res) as ReadableStream<Uint8Array>;
          resolve(new Response(body, { status: res.statusCode ?? 0, headers }));
        });
        r.on("error", reject);
        r.end(req.body);
      });
    },
    close() {
      agent?.destroy();
    },
  };
}
