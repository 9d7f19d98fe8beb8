/**
 * Batched registrations: the changes a client makes in one turn travel as
 * one `batch` request and are applied in order as one change; each item
 * succeeds or fails alone; events and waiting gets see every item; a server
 * without `batch` gets single requests; the probe still refuses ports other
 * processes hold.
 *
 * @module
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect, RegistryError, type ServiceRecord } from "../mod.ts";
import type { Transport } from "../transport.ts";
import {
  freeBlock,
  serve,
  tapped,
  transports,
  until,
  within,
} from "./_helpers.ts";
import {
  fakeRecord,
  fakeServer,
  greeted,
  HELLO,
  raw,
  type Req,
} from "./_raw.ts";

/** `actual`, with only the keys `expected` names (nested), for comparing. */
function pick(actual: unknown, expected: unknown): unknown {
  if (Array.isArray(expected) && Array.isArray(actual)) {
    return actual.map((a, i) => pick(a, expected[i]));
  }
  if (
    typeof expected !== "object" || expected === null ||
    typeof actual !== "object" || actual === null
  ) return actual;
  return Object.fromEntries(
    Object.keys(expected).map((k) => [
      k,
      pick(
        (actual as Record<string, unknown>)[k],
        (expected as Record<string, unknown>)[k],
      ),
    ]),
  );
}

/** Asserts that `actual` has what `expected` has (extra keys allowed). */
function like(actual: unknown, expected: unknown): void {
  assert.deepEqual(pick(actual, expected), expected);
}

/**
 * Counts the requests a client writes, by `op`, and the items of its
 * `batch`es: their number per batch, and by `op`.
 */
function counting(t: Transport, tables = false) {
  const ops = new Map<string, number>();
  const items: number[] = [];
  const itemOps = new Map<string, number>();
  /** The `exclude` of each batch, if it had one. */
  const excludes: number[][] = [];
  const dec = new TextDecoder();
  let rest = "";
  const transport = tapped(t, {
    write(data) {
      const lines = (rest + dec.decode(data)).split("\n");
      rest = lines.pop()!;
      for (const line of lines) {
        const req = JSON.parse(line) as { op: string; ops?: { op: string }[] };
        ops.set(req.op, (ops.get(req.op) ?? 0) + 1);
        if (req.op !== "batch") continue;
        items.push(req.ops!.length);
        const ex = (req as { exclude?: number[] }).exclude;
        if (ex !== undefined) excludes.push(ex);
        for (const { op } of req.ops!) {
          itemOps.set(op, (itemOps.get(op) ?? 0) + 1);
        }
      }
    },
  });
  // the kernel's tables read through `t`, or (`tables` false) a bind each
  const read = tables ? t.boundPorts : undefined;
  return {
    transport: read === undefined
      ? transport
      : { ...transport, boundPorts: read },
    ops,
    items,
    itemOps,
    excludes,
  };
}

function suite(t: Transport): void {
  const name = (s: string) => `[${t.name}] ${s}`;

  test(
    name("a batch is applied in order and answered once, item by item"),
    async () => {
      // one port to pick from, so that the picked one is the same on every
      // store (an etcd store starts its picks at random)
      await using s = await serve(t, { range: { "*": [10001, 10001] } });
      await using r = await greeted(t, s.port);
      await r.json({ id: 1, op: "get", pattern: "web@1" });
      await r.json({ id: 2, op: "subscribe" });
      assert.deepEqual(await r.next(), { id: 2, result: {} });
      await r.json({
        id: 3,
        op: "batch",
        ops: [
          { op: "allocate", role: "web@1.0.0", meta: { a: 1 }, port: 10000 },
          { op: "ready", rid: "nope" },
          { op: "allocate", role: "db@2.0.0", ready: true },
          { op: "format_disk" },
          { op: "allocate", role: "@@" },
          { op: "allocate", role: "web@1.0.1", port: 10005, ready: true },
          { op: "free", port: 10001 },
        ],
      });
      const got: Record<string, unknown>[] = [];
      for (let i = 0; i < 5; i++) got.push(await r.next());
      // the events of the change in the items' order, the get it satisfied
      // once its item is in, then the one reply (in memory the batch is one
      // change, its events before the gets it satisfied; on etcd each item
      // is a change of its own, and the get is answered with its item)
      const rec = (port: number, role: string, version: string) => ({
        host: "127.0.0.1",
        port,
        role,
        version,
        env: "",
      });
      const reply = got.pop();
      const at = got.findIndex((m) => m.id === 1);
      assert.ok(at >= 2, "the get is answered after its item's event");
      const [woken] = got.splice(at, 1);
      const [ev1, ev2, ev3] = got;
      like(ev1, {
        ev: "allocate",
        record: rec(10001, "db", "2.0.0"),
      });
      like(ev2, {
        ev: "allocate",
        record: rec(10005, "web", "1.0.1"),
      });
      assert.equal(woken!.id, 1);
      like(woken!.result, [rec(10005, "web", "1.0.1")]);
      like(ev3, {
        ev: "free",
        record: rec(10001, "db", "2.0.0"),
      });
      assert.equal(reply!.id, 3);
      const results = reply!.result as Record<string, unknown>[];
      assert.equal(results.length, 7);
      like(results[0], {
        result: { ...rec(10000, "web", "1.0.0"), a: 1 },
      });
      assert.equal((results[1]!.error as { code: string }).code, "NOT_FOUND");
      like(results[2], {
        result: rec(10001, "db", "2.0.0"),
      });
      assert.equal((results[3]!.error as { code: string }).code, "BAD_REQUEST");
      assert.equal(
        (results[4]!.error as { code: string }).code,
        "INVALID_ROLE",
      );
      like(results[5], {
        result: rec(10005, "web", "1.0.1"),
      });
      like(results[6], {
        result: rec(10001, "db", "2.0.0"),
      });
      // what the batch left: web@1.0.0 reserved (not visible), web@1.0.1 shown
      assert.deepEqual(
        s.server.query().map((x) => `${x.role}@${x.version}:${x.port}`),
        ["web@1.0.1:10005"],
      );
    },
  );

  test(
    name("a batch that is not an array of at most 1024 is refused whole"),
    async () => {
      await using s = await serve(t);
      await using r = await greeted(t, s.port);
      await r.json({ id: 1, op: "batch", ops: {} });
      assert.equal(
        ((await r.next()).error as { code: string }).code,
        "BAD_REQUEST",
      );
      await r.json({
        id: 2,
        op: "batch",
        ops: Array.from({ length: 1025 }, () => ({ op: "free", port: 1 })),
      });
      assert.equal(
        ((await r.next()).error as { code: string }).code,
        "BAD_REQUEST",
      );
      assert.deepEqual(s.server.query(), []);
    },
  );

  test(
    name(
      "a batch's exclude is passed over by its allocations that pick, and the hello says the range",
    ),
    async () => {
      await using s = await serve(t, {
        range: { "*": [10000, 10003], "10.9.8.7": [30000, 30100] },
      });
      await using away = await raw(t, s.port);
      await away.json({ id: 0, op: "hello", v: 1, advertise: "10.9.8.7" });
      like((await away.next()).result, {
        host: "10.9.8.7",
        range: [30000, 30100],
      });
      await using r = await raw(t, s.port);
      await r.json({ id: 0, op: "hello", v: 1 });
      assert.deepEqual(((await r.next()).result as { range: unknown }).range, [
        10000,
        10003,
      ]);
      await r.json({
        id: 1,
        op: "batch",
        exclude: [10000, 10002],
        ops: [
          { op: "allocate", role: "a@1.0.0", ready: true },
          { op: "allocate", role: "b@1.0.0", exclude: [10001], port: 10002 },
          { op: "allocate", role: "c@1.0.0", exclude: [10001, 10003] },
          { op: "allocate", role: "d@1.0.0", ready: true },
        ],
      });
      const results = (await r.next()).result as {
        result?: { port: number };
        error?: { code: string };
      }[];
      // a named port is not excluded; the others pick from the ports
      // neither list names (c's own exclude and the batch's leave none)
      assert.equal(results[1]!.result?.port, 10002);
      assert.equal(results[2]!.error?.code, "RANGE_EXHAUSTED");
      assert.deepEqual(
        [results[0]!.result?.port, results[3]!.result?.port].sort(),
        [10001, 10003],
      );
      for (const exclude of [{}, [0], Array(1025).fill(10000)]) {
        await r.json({ id: 2, op: "batch", exclude, ops: [] });
        const { error } = (await r.next()) as {
          error: { code: string; message: string };
        };
        assert.equal(error.code, "BAD_REQUEST");
        assert.match(error.message, /^Bad request: "exclude" must /);
      }
      assert.equal(s.server.query().length, 2, "nothing else was taken");
    },
  );

  for (const tables of [false, true]) {
    test(
      name(
        `services started in one turn go out as batches, each exactly once, in order (${
          tables
            ? "checked by one read of the kernel's tables"
            : "checked by binds"
        })`,
      ),
      {
        skip: tables && t.boundPorts === undefined && "no tables to read here",
      },
      async () => {
        await using s = await serve(t, { range: { "*": [10000, 10999] } });
        const seen: ServiceRecord[] = [];
        s.server.on("allocate", (r) => seen.push(r));
        const { transport, ops, items, itemOps, excludes } = counting(
          t,
          tables,
        );
        const watcher = s.client();
        const events: ServiceRecord[] = [];
        watcher.on("allocate", (r) => events.push(r));
        await watcher.query("x"); // subscribed
        const c = s.client({ transport });
        await c.query("x");
        const N = 300;
        const ports = await within(
          Promise.all(
            Array.from({ length: N }, (_, i) => c.service(`svc${i}@1.0.${i}`)),
          ),
          10_000,
          "every service",
        );
        assert.equal(new Set(ports).size, N, "every port once");
        // round the range in the order of the calls: increasing, wrapping
        // past its end at most once (an etcd store starts at random)
        const wraps = ports.filter((p, i) => i > 0 && p < ports[i - 1]!).length;
        assert.ok(
          wraps === 0 || (wraps === 1 && ports[N - 1]! < ports[0]!),
          `ports in the order of the calls: ${ports.join()}`,
        );
        const now = await c.query();
        assert.equal(now.length, N);
        for (const r of now) {
          assert.equal(ports[Number(r.role.slice(3))], r.port);
        }
        assert.equal(seen.length, N, "one allocate event per service");
        await until(() => events.length >= N, "every allocate event");
        assert.equal(events.length, N);
        // by binds: the turn's ports are proposed in one peek, checked
        // together, and asked for by number; by a read: no peek, the
        // allocations pass over the ports in use.
        // Visible at once either way: no ready follows.
        assert.equal(
          ops.get("peek") ?? 0,
          tables ? 0 : 1,
          `peeks: ${JSON.stringify([...ops])}`,
        );
        for (const p of excludes.flat()) {
          assert.ok(!ports.includes(p), `${p} was in use, and handed out`);
        }
        assert.ok((ops.get("batch") ?? 0) >= 1, "allocations batched");
        assert.ok(
          (ops.get("allocate") ?? 0) <= 1,
          `few single requests: ${JSON.stringify([...ops])}`,
        );
        assert.equal(
          (ops.get("ready") ?? 0) + (itemOps.get("ready") ?? 0),
          0,
          "no ready sent",
        );
        assert.equal(
          items.reduce((a, b) => a + b, 0) + (ops.get("allocate") ?? 0),
          N,
          "every allocation sent once",
        );
      },
    );
  }

  test(name("one failing registration of a batch fails alone"), async () => {
    await using s = await serve(t, { maxRegistrationsPerConnection: 5 });
    const c = s.client({ probe: false });
    await c.query("x");
    const settled = await within(
      Promise.allSettled(
        Array.from({ length: 8 }, (_, i) => c.allocate(`svc${i}@1.0.0`)),
      ),
      5000,
      "the allocations",
    );
    assert.deepEqual(
      settled.map((r) => r.status),
      [...Array(5).fill("fulfilled"), ...Array(3).fill("rejected")],
    );
    for (const r of settled.slice(5)) {
      const err = (r as PromiseRejectedResult).reason;
      assert.ok(err instanceof RegistryError && err.code === "LIMIT", err);
    }
    assert.equal((await c.query()).length, 5);
  });

  test(name("a server without batch gets single requests"), async () => {
    const seen: string[] = [];
    let port = 10000;
    await using fake = await fakeServer(t, (req: Req, answer) => {
      seen.push(req.op);
      if (req.op === "hello") return answer(HELLO);
      if (req.op === "allocate") {
        return answer(fakeRecord(req, port++));
      }
      answer({});
    });
    const c = connect("127.0.0.1", fake.port, { transport: t, probe: false });
    try {
      const ports = await within(
        Promise.all([
          c.service("a@1.0.0"),
          c.service("b@1.0.0"),
          c.service("c@1.0.0"),
        ]),
        5000,
        "the services",
      );
      assert.deepEqual(ports, [10000, 10001, 10002]);
      assert.ok(!seen.includes("batch"), seen.join());
      assert.equal(seen.filter((op) => op === "allocate").length, 3);
    } finally {
      await c.close();
    }
  });

  test(
    name("a batch's ports that another process holds are never handed out"),
    async () => {
      const n = 300;
      const low = await freeBlock(t, n);
      const held = [low + 7, low + 150, low + 151];
      const foreign = await Promise.all(
        held.map((port) => t.listen({ hostname: "127.0.0.1", port })),
      );
      try {
        await using s = await serve(t, { range: { "*": [low, low + n - 1] } });
        const c = s.client();
        await c.query("x");
        // and one taken after the client connected, just before it registers
        held.push(low + 12);
        foreign.push(await t.listen({ hostname: "127.0.0.1", port: low + 12 }));
        const ports = await within(
          Promise.all(
            Array.from({ length: 200 }, (_, i) => c.service(`svc${i}@1.0.0`)),
          ),
          10_000,
          "the services",
        );
        assert.equal(new Set(ports).size, 200);
        for (const p of held) assert.ok(!ports.includes(p), `${p} handed out`);
        const shown = (await c.query()).map((r) => r.port);
        for (const p of held) assert.ok(!shown.includes(p));
      } finally {
        for (const l of foreign) l.close();
      }
    },
  );
}

for (const t of transports()) suite(t);
