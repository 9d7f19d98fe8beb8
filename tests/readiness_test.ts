/**
 * Registrations that go not ready and come back, events that follow the
 * environment rule, resynchronising subscriptions, `assume()`'s record,
 * `evict()` and `since`: over real sockets, for every transport.
 *
 * @module
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  createServer,
  RegistryError,
  seaport,
  type ServiceRecord,
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

  test(
    name(
      "unready() hides a service from query and get, keeps its port, and ready() shows it again",
    ),
    async () => {
      await using s = await serve(t, { range: { "*": [30000, 30001] } });
      const svc = s.client();
      const watcher = s.client();
      const seen: string[] = [];
      const note = (type: string) => (r: ServiceRecord, unready: boolean) => {
        if (r.role === "web") seen.push(`${type} ${r.port} ${unready}`);
      };
      watcher.on("allocate", note("allocate"));
      watcher.on("free", note("free"));
      await watcher.query(); // subscribed
      const port = await svc.service("web@1.0.0");
      const other = s.client({ probe: false });

      await svc.unready(port);
      assert.deepEqual(await other.query("web"), []);
      assert.deepEqual(s.server.query("web"), []);
      // the port stays reserved for it
      const taken = await other.allocate("db@1.0.0", () => {});
      assert.notEqual(taken, port);
      await assert.rejects(
        other.allocate("db@1.0.0", () => {}),
        (e: unknown) =>
          e instanceof RegistryError && e.code === "RANGE_EXHAUSTED",
      );
      // a get waits until it is ready again
      const got = other.get("web");
      await other.query();
      let early: ServiceRecord[] | undefined;
      got.then((r) => early = r);
      await other.query();
      assert.equal(early, undefined);
      await svc.ready(port);
      const [back] = await within(got, 2000, "get after ready()");
      assert.equal(back!.port, port);
      await until(() => seen.length === 3, "three events");
      assert.deepEqual(seen, [
        `allocate ${port} false`,
        `free ${port} true`,
        `allocate ${port} false`,
      ]);
      await svc.ready(port); // twice is once
      assert.equal(s.server.query("web").length, 1);
    },
  );

  test(
    name(
      "ready() and unready() of a port the client does not hold reject with NOT_FOUND",
    ),
    async () => {
      await using s = await serve(t);
      const c = s.client();
      for (const call of [c.ready(40000), c.unready(40000)]) {
        await assert.rejects(
          call,
          (e: unknown) => e instanceof RegistryError && e.code === "NOT_FOUND",
        );
      }
    },
  );

  test(
    name("a service that is not ready stays hidden across a server restart"),
    async () => {
      const port = await freePort(t);
      const store = testStore();
      let server = createServer({ transport: t, ...store });
      await server.listen(port, "127.0.0.1");
      const { connect } = seaport("");
      const c = connect(port, { transport: t, ...fast });
      const watcher = connect(port, { transport: t, ...fast });
      try {
        const web = await c.service("web@1.0.0");
        const db = await c.service("db@1.0.0");
        await c.unready(web);
        await server.close();
        server = createServer({ transport: t, ...store });
        await server.listen(port, "127.0.0.1");
        await within(watcher.get("db"), 5000, "db re-asserted");
        assert.deepEqual(server.query("web"), []);
        assert.equal(server.query("db")[0]!.port, db);
        const shown = watcher.get("web");
        await c.ready(web);
        assert.equal((await within(shown, 2000, "web ready"))[0]!.port, web);
      } finally {
        await c.close();
        await watcher.close();
        await server.close();
      }
    },
  );

  test(name("assume() resolves with the record"), async () => {
    await using s = await serve(t);
    const c = s.client();
    let called: ServiceRecord | undefined;
    const record = await c.assume(
      "redis@7.2.0",
      { port: 6379, zone: "eu" },
      (r) => called = r,
    );
    assert.equal(record.port, 6379);
    assert.equal(record.role, "redis");
    assert.equal(record.zone, "eu");
    assert.equal(typeof record.id, "string");
    await until(() => called !== undefined, "the callback");
    assert.deepEqual(called, record);
  });

  test(
    name(
      "events follow the environment rule: the client's own, another, or all",
    ),
    async () => {
      await using s = await serve(t);
      const { connect } = seaport("prod");
      const prod = connect("127.0.0.1", s.port, { transport: t });
      const plain = s.client();
      const seen: Record<string, string[]> = { own: [], all: [], prod: [] };
      plain.on("allocate", (r) => seen.own!.push(r.env || "(default)"));
      plain.on("allocate", (r) => seen.all!.push(r.env || "(default)"), {
        all: true,
      });
      const onProd = (r: ServiceRecord) => seen.prod!.push(r.env);
      plain.on("allocate", onProd, { env: "prod" });
      await plain.query();
      await prod.service("api@1.0.0");
      await plain.service("web@1.0.0");
      await until(() => seen.all!.length === 2, "both events for all");
      await plain.query(); // anything else would have arrived by now
      assert.deepEqual(seen.own, ["(default)"]);
      assert.deepEqual(seen.all!.sort(), ["(default)", "prod"]);
      assert.deepEqual(seen.prod, ["prod"]);
      plain.off("allocate", onProd);
      await prod.service("api@1.0.1");
      await until(() => seen.all!.length === 3, "third event");
      await plain.query();
      assert.deepEqual(
        seen.prod,
        ["prod"],
        "off() removed the scoped listener",
      );
      await prod.close();
    },
  );

  test(
    name(
      "a resync listener gets the state on subscribing and again after a reconnect",
    ),
    async () => {
      const port = await freePort(t);
      const store = testStore();
      let server = createServer({ transport: t, ...store });
      await server.listen(port, "127.0.0.1");
      const { connect } = seaport("");
      const watcher = connect(port, { transport: t, ...fast });
      const other = connect(port, { transport: t, ...fast, probe: false });
      try {
        const web = await other.service("web@1.0.0");
        const [first] = await next<[ServiceRecord[]]>(watcher, "resync");
        assert.deepEqual(first.map((r) => r.port), [web]);
        const again = next<[ServiceRecord[]]>(watcher, "resync");
        await server.close();
        server = createServer({ transport: t, ...store });
        await server.listen(port, "127.0.0.1");
        // the watcher may come back before the service is re-asserted; the
        // events after the snapshot say the rest
        const [records] = await within(again, 5000, "resync after restart");
        if (records.length > 0) assert.equal(records[0]!.port, web);
        else {
          const [r] = await within(watcher.get("web"), 5000, "web back");
          assert.equal(r!.port, web);
        }
      } finally {
        await watcher.close();
        await other.close();
        await server.close();
      }
    },
  );

  test(
    name("evict() frees another client's registration by host and port"),
    async () => {
      await using s = await serve(t);
      const holder = s.client();
      const admin = s.client();
      const port = await holder.service("web@1.0.0");
      const freed = await admin.evict("127.0.0.1", port);
      assert.equal(freed.port, port);
      assert.deepEqual(s.server.query("web"), []);
      await assert.rejects(
        admin.evict("127.0.0.1", port),
        (e: unknown) => e instanceof RegistryError && e.code === "NOT_FOUND",
      );
    },
  );

  test(
    name("query({ since: true }) says when each record was made visible"),
    async () => {
      await using s = await serve(t);
      const c = s.client();
      const before = Date.now();
      await c.service("web@1.0.0");
      const [r] = await c.query({ pattern: "web", since: true });
      assert.equal(typeof r!.since, "number");
      assert.ok(
        Math.abs((r!.since as number) - before) < 2000,
        String(r!.since),
      );
      const [plain] = await c.query("web");
      assert.equal(plain!.since, undefined);
    },
  );
}

for (const t of transports()) suite(t);
