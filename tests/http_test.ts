/**
 * The HTTP side with real `fetch` against a real server: the JSON API, its
 * blocking queries, the event stream and its resume, metrics (checked by
 * `promtool check metrics` when Debian's prometheus package is installed),
 * health checks, the token and the sign-in cookie, every bad input, the
 * limits, and the `--http` command-line option.
 *
 * @module
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { request as httpsRequest } from "node:https";
import { main } from "../cli.ts";
import { createServer, type ServiceRecord } from "../mod.ts";
import {
  freeBlock,
  makeCertificate,
  skip,
  testStoreArgs,
  until,
  within,
} from "./_helpers.ts";
import { poll, program, serveHttp, SseReader } from "./_http.ts";
import { nodeTransport } from "../transport.ts";

const TOKEN = "read-only-token-for-tests";

// deno-lint-ignore no-explicit-any
type Json = any;

async function getJson(
  url: string,
  init: RequestInit = {},
): Promise<{ status: number; headers: Headers; body: Json }> {
  const res = await fetch(url, init);
  const text = await res.text();
  return {
    status: res.status,
    headers: res.headers,
    body: text === "" ? undefined : JSON.parse(text),
  };
}

async function metricsOf(base: string): Promise<string> {
  return await (await fetch(`${base}/metrics`)).text();
}

/** Resolves once the server holds at least one blocking request. */
function blocking(base: string): Promise<void> {
  return poll(
    async () =>
      (sample(await metricsOf(base), "seaport_http_blocking_requests") ?? 0) >
        0,
    "a blocking request",
  );
}

/** Records as JSON carries them (the registry's are class instances). */
function plain(records: readonly ServiceRecord[]): Json {
  return JSON.parse(JSON.stringify(records));
}

function ids(records: readonly ServiceRecord[]): string[] {
  return records.map((r) => r.id).sort();
}

/** The value of one sample in a metrics page, or undefined. */
function sample(page: string, name: string): number | undefined {
  for (const line of page.split("\n")) {
    if (line.startsWith(name + " ")) return Number(line.slice(name.length + 1));
  }
  return undefined;
}

test("GET /v1/services answers what query() gives, with X-Seaport-Index", async () => {
  await using s = await serveHttp();
  const a = s.client();
  await a.service("web@1.2.3", { zone: "eu" });
  await a.service("web@2.0.0");
  await a.service("db@5.1.0");
  const prod = (await import("../mod.ts")).seaport("prod").connect(
    "127.0.0.1",
    s.port,
  );
  try {
    await prod.service("web@1.4.0");
    await until(() => s.server.query("web").length === 3, "3 webs");
    const all = await getJson(`${s.base}/v1/services`);
    assert.equal(all.status, 200);
    assert.equal(
      all.headers.get("content-type"),
      "application/json; charset=utf-8",
    );
    assert.deepEqual(all.body, plain(s.server.query()));
    assert.equal(all.headers.get("x-seaport-index"), "4");
    const web1 = await getJson(`${s.base}/v1/services?pattern=web@1.x`);
    assert.deepEqual(web1.body, plain(s.server.query("web@1.x")));
    assert.equal(web1.body.length, 2);
    const prodWeb = await getJson(
      `${s.base}/v1/services?pattern=web@1.x&env=prod`,
    );
    assert.deepEqual(prodWeb.body, plain(s.server.query("web@1.x", "prod")));
    assert.equal(prodWeb.body[0]!.version, "1.4.0");
    const dflt = await getJson(`${s.base}/v1/services?env=`);
    assert.deepEqual(dflt.body, plain(s.server.query(undefined, "")));
    const path = await getJson(`${s.base}/v1/services/web@%5E1.2?env=`);
    assert.deepEqual(path.body, plain(s.server.query("web@^1.2", "")));
    assert.equal(path.body[0]!.zone, "eu");
    const everything = await getJson(`${s.base}/v1/services?all=1`);
    assert.deepEqual(everything.body, plain(s.server.query()));
  } finally {
    await prod.close();
  }
});

test("?wait= answers as soon as a match registers, and [] when the wait runs out", async () => {
  await using s = await serveHttp();
  const empty = await getJson(`${s.base}/v1/services?pattern=db&wait=100ms`);
  assert.equal(empty.status, 200);
  assert.deepEqual(empty.body, []);
  const waiting = getJson(`${s.base}/v1/services?pattern=web@1.x&wait=10s`);
  await blocking(s.base);
  const c = s.client();
  await c.service("web@2.0.0"); // does not match: the request keeps waiting
  await c.service("web@1.5.0");
  const got = await within(waiting, 5000, "the blocking answer");
  assert.equal(got.status, 200);
  assert.deepEqual(got.body.map((r: ServiceRecord) => r.version), ["1.5.0"]);
  assert.equal(got.headers.get("x-seaport-index"), "2");
  // a match exists: the answer comes at once
  const now = await getJson(`${s.base}/v1/services/web@1.x?wait=5m`);
  assert.equal(now.body.length, 1);
});

test("?index=N&wait= returns once the answer differs from index N", async () => {
  await using s = await serveHttp();
  const c = s.client();
  await c.service("web@1.0.0");
  const first = await getJson(`${s.base}/v1/services/web`);
  const index = Number(first.headers.get("x-seaport-index"));
  assert.equal(index, 1);
  // an index other than the current one: answered at once
  const behind = await getJson(`${s.base}/v1/services/web?index=0&wait=30s`);
  assert.equal(behind.body.length, 1);
  let settled = false;
  const watch = getJson(`${s.base}/v1/services/web?index=${index}&wait=30s`)
    .finally(() => settled = true);
  await blocking(s.base);
  await c.service("db@1.0.0"); // moves the index, not this answer
  const db = await getJson(`${s.base}/v1/services/db`);
  assert.equal(db.headers.get("x-seaport-index"), "2");
  assert.equal(settled, false);
  await c.service("web@1.1.0");
  const changed = await within(watch, 5000, "the changed answer");
  assert.equal(changed.status, 200);
  assert.equal(changed.headers.get("x-seaport-index"), "3");
  assert.deepEqual(
    changed.body.map((r: ServiceRecord) => r.version).sort(),
    ["1.0.0", "1.1.0"],
  );
  // a free changes the answer too
  const again = getJson(`${s.base}/v1/services/web?index=3&wait=30s`);
  await blocking(s.base);
  await c.free(changed.body[0]);
  const after = await within(again, 5000, "the answer after a free");
  assert.equal(after.body.length, 1);
  assert.equal(after.headers.get("x-seaport-index"), "4");
  // nothing changes: the same answer and index when the wait runs out
  const idle = await getJson(`${s.base}/v1/services/web?index=4&wait=100ms`);
  assert.equal(idle.headers.get("x-seaport-index"), "4");
  assert.deepEqual(idle.body, after.body);
});

test("/v1/events streams allocate, assume and free with ids, and resumes from Last-Event-ID", async () => {
  await using s = await serveHttp();
  const c = s.client();
  let firstId: string;
  {
    await using events = await SseReader.open(`${s.base}/v1/events`);
    const ready = await events.next();
    assert.equal(ready.event, "ready");
    assert.deepEqual(JSON.parse(ready.data), { index: 0 });
    const record = await c.service("web@1.2.3");
    await c.assume("db@1.0.0", 20999);
    const allocate = await events.next();
    assert.equal(allocate.event, "allocate");
    const data = JSON.parse(allocate.data);
    assert.equal(data.type, "allocate");
    assert.equal(data.index, 1);
    assert.equal(typeof data.time, "number");
    assert.equal(data.record.port, record);
    assert.match(allocate.id!, /^[0-9a-z]+-1$/);
    firstId = allocate.id!;
    const assume = await events.next();
    assert.equal(assume.event, "assume");
    assert.equal(JSON.parse(assume.data).record.port, 20999);
  }
  await c.free(20999);
  {
    // resume after the first event: the assume and the free are replayed
    await using resumed = await SseReader.open(`${s.base}/v1/events`, {
      "last-event-id": firstId,
    });
    const replayed = [await resumed.next(), await resumed.next()];
    assert.deepEqual(replayed.map((e) => e.event), ["assume", "free"]);
    assert.equal(replayed[1]!.id, firstId.replace(/-1$/, "-3"));
    await c.service("web@1.2.4");
    const live = await resumed.next();
    assert.equal(live.event, "allocate");
    assert.equal(JSON.parse(live.data).index, 4);
  }
  {
    // filtered by pattern and environment; a snapshot first when asked
    await using webs = await SseReader.open(
      `${s.base}/v1/events?pattern=web@1.2.x&env=&snapshot=1`,
    );
    const snap = await webs.next();
    assert.equal(snap.event, "snapshot");
    const body = JSON.parse(snap.data);
    assert.equal(body.index, 4);
    assert.deepEqual(ids(body.records), ids(s.server.query("web@1.2.x", "")));
    assert.equal(Object.keys(body.since).length, 2);
    await c.service("db@2.0.0");
    await c.service("web@1.2.5");
    const next = await webs.next();
    assert.equal(JSON.parse(next.data).record.version, "1.2.5");
  }
});

test("/v1/events says reset when the asked-for id is older than the history, or from another run", async () => {
  await using s = await serveHttp({ http: { port: 0, history: 2 } });
  const c = s.client();
  let run = "";
  {
    await using events = await SseReader.open(`${s.base}/v1/events`);
    await events.next(); // ready
    for (let i = 0; i < 4; i++) await c.service(`web@1.0.${i}`);
    const fourth = [await events.next(), await events.next()];
    run = fourth[0]!.id!.split("-")[0]!;
    await events.next();
    await events.next();
  }
  {
    await using old = await SseReader.open(`${s.base}/v1/events?snapshot=1`, {
      "last-event-id": `${run}-1`,
    });
    const reset = await old.next();
    assert.equal(reset.event, "reset");
    const body = JSON.parse(reset.data);
    assert.match(body.reason, /no longer in the history/);
    assert.equal(body.oldest, 3);
    assert.equal(body.index, 4);
    const snap = await old.next();
    assert.equal(snap.event, "snapshot");
    assert.equal(JSON.parse(snap.data).records.length, 4);
  }
  {
    // the last two are still held: replayed without a reset
    await using recent = await SseReader.open(`${s.base}/v1/events`, {
      "last-event-id": `${run}-2`,
    });
    const replay = await recent.next();
    assert.equal(replay.event, "allocate");
    assert.equal(JSON.parse(replay.data).index, 3);
  }
  {
    await using other = await SseReader.open(`${s.base}/v1/events`, {
      "last-event-id": "zzzz-2",
    });
    const reset = await other.next();
    assert.equal(reset.event, "reset");
    assert.match(JSON.parse(reset.data).reason, /restarted/);
  }
});

const promtool = program("promtool", "/usr/bin/promtool");

test("/metrics passes promtool check metrics and its values match the registry", async (t) => {
  const block = await freeBlock(nodeTransport(), 10);
  await using s = await serveHttp({
    range: { "*": [block, block + 9], "10.9.9.9": [30000, 30099] },
  });
  const c = s.client();
  await c.service("web@1.2.3");
  await c.service("web@1.2.4");
  const prod = (await import("../mod.ts")).seaport("prod").connect(
    "127.0.0.1",
    s.port,
  );
  try {
    await prod.service("db@1.0.0");
    const refused = await c.free(1).catch((err) => err);
    assert.equal(refused.code, "NOT_FOUND");
    const pending = c.get("cache");
    await poll(
      async () =>
        (await metricsOf(s.base)).includes("\nseaport_waiting_gets 1\n"),
      "a waiting get",
    );
    await prod.service("cache@1.0.0"); // another env: the get waits on
    await c.service("cache@1.0.0");
    await pending;
    const res = await fetch(`${s.base}/metrics`);
    assert.equal(res.status, 200);
    assert.equal(
      res.headers.get("content-type"),
      "text/plain; version=0.0.4; charset=utf-8",
    );
    const page = await res.text();
    const has = (line: string) =>
      assert.ok(
        page.split("\n").includes(line),
        `metrics lack "${line}":\n${page}`,
      );
    has(`seaport_registrations{env="",role="web"} 2`);
    has(`seaport_registrations{env="",role="cache"} 1`);
    has(`seaport_registrations{env="prod",role="db"} 1`);
    has(`seaport_registrations{env="prod",role="cache"} 1`);
    has(`seaport_ports_used{host="127.0.0.1",range="${block}-${block + 9}"} 5`);
    has(`seaport_ports_free{host="127.0.0.1",range="${block}-${block + 9}"} 5`);
    has(`seaport_ports_used{host="10.9.9.9",range="30000-30099"} 0`);
    has(`seaport_ports_free{host="10.9.9.9",range="30000-30099"} 100`);
    has(`seaport_connections ${s.server.connections}`);
    has(`seaport_errors_total{code="NOT_FOUND"} 1`);
    has(`seaport_requests_total{op="get"} 1`);
    has(`seaport_requests_total{op="hello"} 2`);
    has(`seaport_waiting_gets 0`);
    has(`seaport_wakeup_latency_seconds_count 1`);
    has(`seaport_wakeup_latency_seconds_bucket{le="+Inf"} 1`);
    has(`seaport_events_total{type="allocate"} 5`);
    has(`seaport_change_index 5`);
    assert.ok((sample(page, "process_resident_memory_bytes") ?? 0) > 1e6);
    assert.ok((sample(page, "process_cpu_seconds_total") ?? 0) > 0);
    if (promtool === undefined) {
      return skip(t, "promtool is not installed (Debian package prometheus)");
    }
    const check = spawnSync(promtool, ["check", "metrics"], {
      input: page,
      encoding: "utf8",
    });
    assert.equal(check.stdout + check.stderr, "");
    assert.equal(check.status, 0);
  } finally {
    await prod.close();
  }
});

test("/v1/pattern checks a pattern with the registry's parser", async () => {
  await using s = await serveHttp();
  const ok = await getJson(`${s.base}/v1/pattern?pattern=web%40%5E1.2`);
  assert.equal(ok.status, 200);
  assert.deepEqual(ok.body, {
    pattern: "web@^1.2",
    name: "web",
    range: ">=1.2.0 <2.0.0-0",
  });
  const any = await getJson(`${s.base}/v1/pattern?pattern=web`);
  assert.equal(any.body.range, "*");
  const bad = await getJson(`${s.base}/v1/pattern?pattern=web@%3E%3Dbanana`);
  assert.equal(bad.status, 200);
  assert.deepEqual(bad.body.error, {
    code: "INVALID_PATTERN",
    message: 'Invalid pattern "web@>=banana": ">=banana" is not a semver range',
  });
  assert.equal((await getJson(`${s.base}/v1/pattern`)).status, 400);
});

test("/healthz and /readyz answer 200, HEAD answers without a body", async () => {
  await using s = await serveHttp();
  assert.deepEqual((await getJson(`${s.base}/healthz`)).body, { status: "ok" });
  const ready = await getJson(`${s.base}/readyz`);
  assert.equal(ready.status, 200);
  assert.equal(ready.body.status, "ready");
  const head = await fetch(`${s.base}/v1/services`, { method: "HEAD" });
  assert.equal(head.status, 200);
  assert.equal(head.headers.get("x-seaport-index"), "0");
  assert.equal(await head.text(), "");
});

test("bad input gets a 4xx with a JSON { code, message }", async () => {
  await using s = await serveHttp({
    http: { port: 0, maxUrlBytes: 200, maxHeaderBytes: 600, maxWait: 60_000 },
  });
  const cases: [string, RequestInit, number, string, RegExp][] = [
    [
      "/v1/services?pattern=web@1.x.y.z",
      {},
      400,
      "INVALID_PATTERN",
      /web@1\.x\.y\.z/,
    ],
    ["/v1/services/web@%3E%3Dbanana", {}, 400, "INVALID_PATTERN", /banana/],
    ["/v1/services?pattern=we%00b", {}, 400, "INVALID_PATTERN", /printable/],
    ["/v1/services?wait=soon", {}, 400, "BAD_WAIT", /"soon"/],
    ["/v1/services?wait=2m", {}, 400, "BAD_WAIT", /at most 60s/],
    ["/v1/services?index=-1", {}, 400, "BAD_INDEX", /"-1"/],
    ["/v1/services?index=1.5&wait=1s", {}, 400, "BAD_INDEX", /1\.5/],
    ["/v1/services?colour=red", {}, 400, "BAD_REQUEST", /"colour"/],
    ["/v1/services?env=a&env=b", {}, 400, "BAD_REQUEST", /twice/],
    ["/v1/services?env=a&all=1", {}, 400, "BAD_REQUEST", /not both/],
    ["/v1/services?all=maybe", {}, 400, "BAD_REQUEST", /maybe/],
    ["/v1/services/web?pattern=db", {}, 400, "BAD_REQUEST", /not both/],
    ["/v1/events?snapshot=2", {}, 400, "BAD_REQUEST", /snapshot/],
    [
      "/v1/events",
      { headers: { "last-event-id": "x y" } },
      400,
      "BAD_INDEX",
      /Last-Event-ID/,
    ],
    ["/v2/services", {}, 404, "NOT_FOUND", /\/v2\/services/],
    ["/metrics?x=1", {}, 400, "BAD_REQUEST", /"x"/],
    [
      "/v1/services",
      { method: "POST", body: "{}" },
      405,
      "METHOD_NOT_ALLOWED",
      /POST/,
    ],
    [
      "/v1/services/web",
      { method: "DELETE" },
      405,
      "METHOD_NOT_ALLOWED",
      /DELETE/,
    ],
    [
      "/metrics",
      { method: "PUT", body: "x" },
      405,
      "METHOD_NOT_ALLOWED",
      /GET, HEAD/,
    ],
    [
      `/v1/services?pattern=${"w".repeat(300)}`,
      {},
      414,
      "URI_TOO_LONG",
      /200 bytes/,
    ],
    [
      "/healthz",
      { headers: { "x-big": "y".repeat(700) } },
      431,
      "HEADERS_TOO_LARGE",
      /600 bytes/,
    ],
  ];
  for (const [path, init, status, code, message] of cases) {
    const res = await getJson(s.base + path, init);
    assert.equal(res.status, status, `${init.method ?? "GET"} ${path}`);
    assert.equal(
      res.headers.get("content-type"),
      "application/json; charset=utf-8",
    );
    assert.equal(res.body.code, code, path);
    assert.match(res.body.message, message, path);
    if (status === 405) assert.ok(res.headers.get("allow"));
  }
  assert.deepEqual(s.server.query(), []); // nothing changed the registry
});

test("with a token, requests without it or with a wrong one get 401; the right Bearer token works", async () => {
  await using s = await serveHttp({
    secret: "beep boop",
    http: { port: 0, token: TOKEN },
  });
  for (
    const path of [
      "/v1/services",
      "/v1/events",
      "/metrics",
      "/healthz",
      "/readyz",
      "/nope",
    ]
  ) {
    const none = await getJson(s.base + path);
    assert.equal(none.status, 401, path);
    assert.equal(none.body.code, "UNAUTHORIZED");
    assert.equal(
      none.headers.get("www-authenticate"),
      'Bearer realm="seaport"',
    );
    for (
      const wrong of [
        `Bearer ${TOKEN}x`,
        "Bearer beep boop",
        `Basic ${TOKEN}`,
        "Bearer ",
      ]
    ) {
      const res = await getJson(s.base + path, {
        headers: { authorization: wrong },
      });
      assert.equal(res.status, 401, `${path} with ${wrong}`);
    }
  }
  const auth = { authorization: `Bearer ${TOKEN}` };
  assert.equal(
    (await getJson(`${s.base}/v1/services`, { headers: auth })).status,
    200,
  );
  assert.equal(
    (await fetch(`${s.base}/metrics`, { headers: auth })).status,
    200,
  );
  await using events = await SseReader.open(`${s.base}/v1/events`, auth);
  assert.equal((await events.next()).event, "ready");
  // the page asks to sign in; the static assets carry no registry data
  const page = await fetch(`${s.base}/`);
  assert.equal(page.status, 401);
  assert.match(await page.text(), /<form method="post" action="\/login">/);
  assert.equal((await fetch(`${s.base}/assets/app.js`)).status, 200);
});

test("the sign-in form sets an HttpOnly SameSite cookie that opens the page, the API and the stream", async () => {
  await using s = await serveHttp({ http: { port: 0, token: TOKEN } });
  const form = (token: string, headers: Record<string, string> = {}) =>
    fetch(`${s.base}/login`, {
      method: "POST",
      headers: {
        "content-type": "application/x-www-form-urlencoded",
        ...headers,
      },
      body: new URLSearchParams({ token }).toString(),
      redirect: "manual",
    });
  const wrong = await form("guess");
  assert.equal(wrong.status, 401);
  assert.match(await wrong.text(), /not this server's HTTP token/);
  assert.equal(wrong.headers.get("set-cookie"), null);
  const foreign = await form(TOKEN, { origin: "http://evil.example" });
  assert.equal(foreign.status, 403);
  await foreign.body?.cancel();
  const right = await form(TOKEN, { origin: s.base });
  assert.equal(right.status, 303);
  assert.equal(right.headers.get("location"), "/");
  const setCookie = right.headers.get("set-cookie")!;
  assert.match(
    setCookie,
    /^seaport_session=[0-9a-f]{64}; Path=\/; HttpOnly; SameSite=Strict$/,
  );
  assert.ok(!setCookie.includes(TOKEN));
  const cookie = setCookie.split(";")[0]!;
  const page = await fetch(`${s.base}/`, { headers: { cookie } });
  assert.equal(page.status, 200);
  assert.match(await page.text(), /<table id="map">/);
  assert.equal(
    (await getJson(`${s.base}/v1/services`, { headers: { cookie } })).status,
    200,
  );
  await using events = await SseReader.open(`${s.base}/v1/events`, { cookie });
  assert.equal((await events.next()).event, "ready");
  const forged = await fetch(`${s.base}/v1/services`, {
    headers: { cookie: "seaport_session=" + "0".repeat(64) },
  });
  assert.equal(forged.status, 401);
  await forged.body?.cancel();
  const out = await fetch(`${s.base}/logout`, {
    method: "POST",
    redirect: "manual",
  });
  assert.equal(out.status, 303);
  assert.match(
    out.headers.get("set-cookie")!,
    /^seaport_session=; .*Max-Age=0/,
  );
});

test("a server with a secret and no HTTP token refuses to start its HTTP side", () => {
  assert.throws(
    () => createServer({ secret: "beep boop", http: { port: 0 } }),
    {
      name: "TypeError",
      message: /needs a read-only token when the server has a secret/,
    },
  );
  assert.throws(
    () =>
      createServer({
        secret: "beep boop",
        http: { port: 0, token: "beep boop" },
      }),
    { name: "TypeError", message: /must differ from the secret/ },
  );
  assert.throws(() => createServer({ http: { port: 0, maxStreams: 0 } }), {
    name: "RangeError",
    message: /"http\.maxStreams"/,
  });
  assert.throws(() => createServer({ http: { port: 70000 } }), RangeError);
});

test("blocking requests and event streams beyond their limits get 429", async () => {
  await using s = await serveHttp({
    http: { port: 0, maxBlocking: 1, maxStreams: 1 },
  });
  const waiting = getJson(`${s.base}/v1/services/web?wait=30s`);
  await blocking(s.base);
  const refused = await getJson(`${s.base}/v1/services/db?wait=30s`);
  assert.equal(refused.status, 429);
  assert.equal(refused.body.code, "LIMIT");
  assert.match(refused.body.message, /at most 1 at once/);
  // a query that need not wait is still answered
  assert.equal((await getJson(`${s.base}/v1/services/db`)).status, 200);
  await using first = await SseReader.open(`${s.base}/v1/events`);
  await first.next();
  const second = await getJson(`${s.base}/v1/events`);
  assert.equal(second.status, 429);
  assert.match(second.body.message, /Too many event streams: at most 1/);
  await s.client().service("web@1.0.0");
  assert.equal(
    (await within(waiting, 5000, "the blocking answer")).body.length,
    1,
  );
});

test("every answer carries the security headers; the page allows only its own scripts and styles", async () => {
  await using s = await serveHttp();
  for (const path of ["/", "/v1/services", "/nope"]) {
    const res = await fetch(s.base + path);
    await res.body?.cancel();
    const csp = res.headers.get("content-security-policy")!;
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'self'/);
    assert.match(csp, /style-src 'self'/);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.equal(res.headers.get("x-frame-options"), "DENY");
    assert.equal(res.headers.get("x-content-type-options"), "nosniff");
    assert.equal(res.headers.get("referrer-policy"), "no-referrer");
  }
  const page = await (await fetch(`${s.base}/`)).text();
  assert.doesNotMatch(page, /<script>|<style>| style=|\son\w+="/);
  assert.doesNotMatch(page, /https?:\/\//);
});

test("close() ends open event streams and blocking requests", async () => {
  const s = await serveHttp();
  const events = await SseReader.open(`${s.base}/v1/events`);
  await events.next();
  const waiting = getJson(`${s.base}/v1/services/web?wait=60s`);
  await blocking(s.base);
  await within(s.server.close(), 5000, "close()");
  await events.end();
  const answered = await within(waiting, 5000, "the blocking answer");
  assert.equal(answered.status, 200);
  assert.deepEqual(answered.body, []);
  await events[Symbol.asyncDispose]();
});

test("with TLS the HTTP side is HTTPS with the same certificate", async (t) => {
  const pem = makeCertificate("IP:127.0.0.1,DNS:localhost");
  if (typeof pem === "string") return skip(t, pem);
  await using s = await serveHttp({ tls: pem });
  const body = await new Promise<string>((resolve, reject) => {
    const req = httpsRequest({
      host: "127.0.0.1",
      port: s.httpPort,
      path: "/healthz",
      ca: pem.cert,
    }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (d) => text += d);
      res.on("end", () => resolve(`${res.statusCode} ${text}`));
    });
    req.on("error", reject);
    req.end();
  });
  assert.equal(body, '200 {"status":"ok"}');
});

test("`seaport 0 --http 0` serves the HTTP side; a secret without --http-token is refused", async () => {
  const lines: string[] = [];
  const ac = new AbortController();
  let printed: () => void = () => {};
  const http = new Promise<void>((resolve) => printed = resolve);
  const running = main([
    "0",
    "--host",
    "127.0.0.1",
    "--http",
    "0",
    ...testStoreArgs(),
  ], {
    stdout: (s) => {
      lines.push(s);
      if (s.startsWith("seaport HTTP on")) printed();
    },
    stderr: (s) => lines.push(s),
    env: {},
    signal: ac.signal,
  });
  await within(http, 5000, "the HTTP line");
  const port =
    /:(\d+)/.exec(lines.find((l) => l.startsWith("seaport HTTP"))!)![1];
  const res = await getJson(`http://127.0.0.1:${port}/healthz`);
  assert.equal(res.status, 200);
  ac.abort();
  assert.equal(await running, 0);
  const err: string[] = [];
  const code = await main(["0", "--secret", "s", "--http", "0"], {
    stdout: () => {},
    stderr: (s) => err.push(s),
    env: {},
  });
  assert.equal(code, 2);
  assert.match(err.join(""), /--http with a secret needs --http-token/);
  const envToken = await main(["0", "--secret", "s", "--http", "x"], {
    stdout: () => {},
    stderr: (s) => err.push(s),
    env: { SEAPORT_HTTP_TOKEN: "t" },
  });
  assert.equal(envToken, 2);
  assert.match(err.join(""), /Invalid --http port "x"/);
});
