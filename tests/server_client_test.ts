import { test } from "node:test";
import assert from "node:assert/strict";
import {
  AbortError,
  AuthError,
  ConnectionError,
  createServer,
  RegistryError,
  seaport,
  type ServiceRecord,
  TimeoutError,
} from "../mod.ts";
import type { Transport } from "../transport.ts";
import {
  fast,
  freePort,
  next,
  serve,
  testStore,
  transports,
  until,
  within,
} from "./_helpers.ts";

function suite(t: Transport): void {
  const name = (s: string) => `[${t.name}] ${s}`;

  test(name("get() waits until a matching service registers"), async () => {
    await using s = await serve(t, { secret: "beep boop" });
    const client = s.client({ secret: "beep boop" });
    const server = s.client({ secret: "beep boop" });
    const got = client.get("web@1.2.x");
    let seen: ServiceRecord[] | undefined;
    got.then((r) => seen = r);
    await client.query(); // the get has reached the server by now
    assert.equal(seen, undefined);
    const port = await server.service("web@1.2.3", (p, ready) => {
      assert.equal(typeof p, "number");
      ready();
    });
    const [r] = await within(got, 2000, "get");
    assert.equal(r!.port, port);
    assert.equal(r!.host, "127.0.0.1");
    assert.equal(r!.role, "web");
    assert.equal(r!.version, "1.2.3");
  });

  test(
    name("a client started before the server still gets its answer"),
    async () => {
      const port = await freePort(t);
      const { connect } = seaport("");
      const early = connect("127.0.0.1", port, { transport: t, ...fast });
      const got = early.get("web");
      let calledBack = false;
      early.get("web", () => calledBack = true);
      const server = createServer({ ...testStore(), transport: t });
      try {
        await server.listen(port, "127.0.0.1");
        const other = connect(port, { transport: t });
        await other.service("web@1.0.0");
        const [r] = await within(got, 5000, "get after the server started");
        assert.equal(r!.role, "web");
        await until(() => calledBack, "the callback form");
        await other.close();
      } finally {
        await early.close();
        await server.close();
      }
    },
  );

  test(name("the seed's version example works over the wire"), async () => {
    await using s = await serve(t);
    const c = s.client();
    for (const v of ["1.2.3", "1.3.5", "0.9.2"]) await c.service(`beep@${v}`);
    const versions = async (p: string) =>
      (await c.query(p)).map((r) => r.version).sort();
    assert.deepEqual(await versions("beep"), ["0.9.2", "1.2.3", "1.3.5"]);
    assert.deepEqual(await versions("beep@1.2.x"), ["1.2.3"]);
    assert.deepEqual(await versions("beep@>=1.2"), ["1.2.3", "1.3.5"]);
  });

  test(
    name("a registration is visible only once ready() is called"),
    async () => {
      await using s = await serve(t);
      const c = s.client();
      let ready: (() => Promise<void>) | undefined;
      const port = await c.service("web@1.0.0", (_p, r) => ready = r);
      assert.deepEqual(await c.query("web"), []);
      await ready!();
      assert.deepEqual((await c.query("web")).map((r) => r.port), [port]);
    },
  );

  test(
    name("server and clients see allocate, assume and free events"),
    async () => {
      await using s = await serve(t);
      const watcher = s.client();
      const seen: string[] = [];
      for (const ev of ["allocate", "assume", "free"] as const) {
        watcher.on(ev, (r) => seen.push(`${ev} ${r.role}:${r.port}`));
        s.server.on(ev, (r) => seen.push(`server ${ev} ${r.role}:${r.port}`));
      }
      await watcher.query(); // subscribed
      const c = s.client();
      const port = await c.allocate("web@1.0.0");
      await c.assume("db@2.0.0", 9999);
      await c.free(port);
      await until(() => seen.length === 6 && seen, "six events");
      assert.deepEqual(seen.sort(), [
        `allocate web:${port}`,
        "assume db:9999",
        `free web:${port}`,
        `server allocate web:${port}`,
        "server assume db:9999",
        `server free web:${port}`,
      ]);
    },
  );

  test(name("metadata round-trips and cannot override the host"), async () => {
    await using s = await serve(t);
    const c = s.client();
    const meta = { host: "8.8.8.8", region: "eu", n: 3, tags: ["a", "b"] };
    const port = await c.service("web@1.0.0", meta);
    const [r] = await c.get("web");
    assert.deepEqual({ ...r, id: "-" }, {
      host: "127.0.0.1",
      port,
      role: "web",
      version: "1.0.0",
      env: "",
      id: "-",
      region: "eu",
      n: 3,
      tags: ["a", "b"],
    });
  });

  test(name("advertise sets the host of registrations"), async () => {
    await using s = await serve(t);
    const c = s.client({ advertise: "10.9.8.7" });
    await c.service("web");
    assert.equal((await c.query("web"))[0]!.host, "10.9.8.7");
    assert.equal(c.host, "10.9.8.7");
  });

  test(name("free() takes a port or a record"), async () => {
    await using s = await serve(t);
    const c = s.client();
    const a = await c.service("a@1.0.0");
    await c.service("b@1.0.0");
    await c.free(a);
    const [b] = await c.query("b");
    await c.free(b!);
    assert.deepEqual(await c.query(), []);
    await assert.rejects(
      c.free(4242),
      (err: unknown) =>
        err instanceof RegistryError && err.code === "NOT_FOUND",
    );
  });

  test(name("closing a client frees its registrations"), async () => {
    await using s = await serve(t);
    const a = s.client();
    const b = s.client();
    await a.service("web@1.0.0");
    await a.service("db@1.0.0");
    await b.service("web@1.0.1");
    const freed = next(s.server, "free");
    await a.close();
    await freed;
    await until(() => s.server.query().length === 1, "frees");
    assert.deepEqual((await b.query()).map((r) => r.version), ["1.0.1"]);
  });

  test(name("a wrong secret is an AuthError and changes nothing"), async () => {
    await using s = await serve(t, { secret: "right" });
    const good = s.client({ secret: "right" });
    await good.service("web");
    for (const opts of [{ secret: "wrong" }, {}]) {
      const bad = s.client(opts);
      const errors: unknown[] = [];
      bad.on("error", (e) => errors.push(e));
      await assert.rejects(bad.service("evil"), AuthError);
      await assert.rejects(bad.query(), ConnectionError);
      assert.ok(errors[0] instanceof AuthError);
      assert.ok(!String((errors[0] as Error).message).includes("wrong"));
    }
    assert.deepEqual(s.server.query().map((r) => r.role), ["web"]);
  });

  test(name("environments partition registrations"), async () => {
    await using s = await serve(t);
    const prod = seaport("prod").connect("127.0.0.1", s.port, { transport: t });
    const dev = seaport("dev").connect(`127.0.0.1:${s.port}`, { transport: t });
    try {
      await prod.service("web@1.0.0");
      assert.deepEqual(await dev.query("web"), []);
      assert.equal((await dev.query("prod", "web")).length, 1);
      assert.equal((await prod.query("web")).length, 1);
      await dev.service("db@1.0.0");
      const all = await dev.query({ all: true });
      assert.deepEqual(all.map((r) => `${r.env}/${r.role}`).sort(), [
        "dev/db",
        "prod/web",
      ]);
      assert.equal(s.server.query("web", "prod").length, 1);
      assert.equal(s.server.query("web", "dev").length, 0);
      assert.equal(s.server.query("web").length, 1);
    } finally {
      await prod.close();
      await dev.close();
    }
  });

  test(name("an exhausted range rejects with RANGE_EXHAUSTED"), async () => {
    await using s = await serve(t, { range: { "*": [21000, 21001] } });
    const c = s.client({ probe: false }); // the server's own check
    await c.service("a");
    await c.service("b");
    await assert.rejects(
      c.service("c"),
      (err: unknown) =>
        err instanceof RegistryError && err.code === "RANGE_EXHAUSTED" &&
        /range 21000-21001 on 127\.0\.0\.1 is exhausted/.test(err.message),
    );
  });

  test(
    name("invalid roles and patterns are errors, not empty answers"),
    async () => {
      await using s = await serve(t);
      const c = s.client();
      await assert.rejects(
        c.service("web@1.2"),
        (e: unknown) => e instanceof RegistryError && e.code === "INVALID_ROLE",
      );
      await assert.rejects(
        c.query("web@>=nope"),
        (e: unknown) =>
          e instanceof RegistryError && e.code === "INVALID_PATTERN",
      );
      await assert.rejects(
        c.get("@1"),
        (e: unknown) =>
          e instanceof RegistryError && e.code === "INVALID_PATTERN",
      );
      await assert.rejects(c.assume("web", 70000), RangeError);
    },
  );

  test(
    name("hundreds of allocations from two clients never share a port"),
    async () => {
      await using s = await serve(t);
      const a = s.client();
      const b = s.client();
      const all = await Promise.all(
        Array.from(
          { length: 400 },
          (_, i) => (i % 2 ? a : b).service(`svc${i % 10}@1.0.${i}`),
        ),
      );
      assert.equal(new Set(all).size, 400);
      assert.equal(s.server.query().length, 400);
    },
  );

  test(
    name("get() gives up on timeout or abort, and close() cancels it"),
    async () => {
      await using s = await serve(t);
      const c = s.client();
      await assert.rejects(c.get("none", { timeout: 50 }), TimeoutError);
      const ac = new AbortController();
      const aborted = c.get("none", { signal: ac.signal });
      const reason = new Error("stop");
      ac.abort(reason);
      await assert.rejects(aborted, (e: unknown) => {
        assert.ok(e instanceof AbortError, String(e));
        assert.equal(e.code, "ABORTED");
        assert.equal(e.cause, reason);
        return true;
      });
      const timedOut = AbortSignal.timeout(30);
      await assert.rejects(
        c.get("none", { signal: timedOut }),
        (e: unknown) =>
          e instanceof TimeoutError && e.cause === timedOut.reason,
      );
      const early = new AbortController();
      early.abort("early");
      await assert.rejects(
        c.get("none", { signal: early.signal }),
        (e: unknown) => e instanceof AbortError && e.cause === "early",
      );
      const pending = assert.rejects(
        c.get("none"),
        (e: unknown) => e instanceof ConnectionError && e.code === "CLOSED",
      );
      await c.close();
      await pending;
    },
  );

  test(
    name("service() comes back on the same port after a server restart"),
    async () => {
      const port = await freePort(t);
      const store = testStore();
      let server = createServer({ transport: t, ...store });
      await server.listen(port, "127.0.0.1");
      const { connect } = seaport("");
      const c = connect(port, { transport: t, ...fast });
      const watcher = connect(port, { transport: t, ...fast });
      try {
        const p1 = await c.service("web@1.0.0", { zone: "a" });
        const p2 = await c.service("db@1.0.0");
        const plain = await c.allocate("tmp@1.0.0");
        await server.close();
        server = createServer({ transport: t, ...store });
        await server.listen(port, "127.0.0.1");
        const back = await within(watcher.get("db"), 5000, "re-assertion");
        assert.equal(back[0]!.port, p2);
        await until(() => server.query().length === 2, "both services back");
        const web = server.query("web");
        assert.equal(web.length, 1);
        assert.equal(web[0]!.port, p1);
        assert.equal(web[0]!.zone, "a");
        assert.ok(!server.query().some((r) => r.port === plain));
      } finally {
        await c.close();
        await watcher.close();
        await server.close();
      }
    },
  );

  test(name("calls made while the server is down are queued"), async () => {
    const port = await freePort(t);
    const store = testStore();
    let server = createServer({ transport: t, ...store });
    await server.listen(port, "127.0.0.1");
    const { connect } = seaport("");
    const c = connect(port, { transport: t, ...fast });
    try {
      await c.query();
      const down = next(c, "disconnect");
      await server.close();
      await down;
      const queued = c.service("late@1.0.0");
      const found = c.query("late");
      server = createServer({ transport: t, ...store });
      await server.listen(port, "127.0.0.1");
      const lport = await within(queued, 5000, "queued service");
      await found;
      assert.equal(server.query("late")[0]!.port, lport);
    } finally {
      await c.close();
      await server.close();
    }
  });
}

for (const t of transports()) suite(t);
