/**
 * Liveness: a stopped or killed client loses its registrations in bounded
 * time, a stopped client comes back on the same ports, and a client notices a
 * server that has gone silent, never answers its hello or hangs up during the
 * handshake; calls made around a lost connection settle as documented. The
 * clients and servers that get stopped run in their own processes
 * (tests/fixtures/holder.mjs).
 *
 * @module
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect, ConnectionError, type ServiceRecord } from "../mod.ts";
import type { Conn, Transport } from "../transport.ts";
import { holder } from "./_child.ts";
import { fakeServer, greeted, HELLO } from "./_raw.ts";
import {
  fast,
  next,
  serve,
  testEtcd,
  transports,
  until,
  within,
} from "./_helpers.ts";

/** The server's heartbeat and timeout in these tests, in ms. */
const HEARTBEAT = 200;
const TIMEOUT = 1000;
/** The server sweeps for silent connections every twentieth of the timeout. */
const SWEEP = TIMEOUT / 20;
/**
 * Timers and I/O may run this late on a busy machine; on the etcd store a
 * free is also one etcd write (an fsync on etcd's disk, which other work on
 * the machine can hold up).
 */
const SLACK = testEtcd === undefined ? 200 : 700;

const sorted = (ports: readonly number[]) => [...ports].sort((a, b) => a - b);
const portsOf = (records: readonly ServiceRecord[]) =>
  sorted(records.map((r) => r.port));

/** A transport that can cut the connection and refuse new ones. */
function partitionable(t: Transport) {
  const state = { reachable: true, conn: undefined as Conn | undefined };
  const transport: Transport = {
    name: t.name,
    listen: (ep, tls) => t.listen(ep, tls),
    async connect(ep, tls) {
      if (!state.reachable) throw new ConnectionError("partitioned");
      return state.conn = await t.connect(ep, tls);
    },
  };
  return { transport, state };
}

function suite(t: Transport): void {
  const name = (s: string) => `[${t.name}] ${s}`;

  test(
    name(
      "a stopped client's services vanish within the timeout and come back on the same ports after SIGCONT",
    ),
    async () => {
      await using s = await serve(t, {
        heartbeat: HEARTBEAT,
        timeout: TIMEOUT,
      });
      await using h = holder("client", {
        port: s.port,
        services: 3,
        transport: t.name,
        ...fast,
      });
      await h.next("connect");
      const { ports } = await h.next<{ ports: number[] }>("registered");
      assert.deepEqual(portsOf(s.server.query()), sorted(ports));

      const freed: number[] = [];
      let lastFree = 0;
      s.server.on("free", (r) => {
        freed.push(r.port);
        lastFree = Date.now();
      });
      h.signal("SIGSTOP");
      const stopped = Date.now();
      await until(
        () => freed.length === 3,
        "the stopped client's services to be freed",
        3 * TIMEOUT,
      );
      const took = lastFree - stopped;
      console.log(
        `[${t.name}] SIGSTOPped client: services freed after ${took} ms (timeout ${TIMEOUT} ms, heartbeat ${HEARTBEAT} ms)`,
      );
      assert.deepEqual(sorted(freed), sorted(ports));
      assert.ok(
        took >= TIMEOUT - HEARTBEAT - 50,
        `freed after ${took} ms: earlier than the timeout allows`,
      );
      assert.ok(
        took <= TIMEOUT + SWEEP + SLACK,
        `freed after ${took} ms: later than timeout + sweep + slack`,
      );
      assert.equal(s.server.connections, 0);

      h.signal("SIGCONT");
      await h.next("disconnect", 5000);
      await h.next("connect", 5000);
      await until(
        () => s.server.query().length === 3 && s.server.query(),
        "the services to be re-asserted",
      );
      assert.deepEqual(portsOf(s.server.query()), sorted(ports));
      assert.deepEqual(
        s.server.query().map((r) => r.role).sort(),
        ["hold0", "hold1", "hold2"],
      );
    },
  );

  test(
    name("a killed client's services are freed as soon as its socket closes"),
    async () => {
      await using s = await serve(t); // the default timeout: 10 s
      await using h = holder("client", {
        port: s.port,
        services: 3,
        transport: t.name,
      });
      const { ports } = await h.next<{ ports: number[] }>("registered");
      assert.equal(s.server.query().length, 3);
      const freed: number[] = [];
      let lastFree = 0;
      s.server.on("free", (r) => {
        freed.push(r.port);
        lastFree = Date.now();
      });
      h.signal("SIGKILL");
      const killed = Date.now();
      await until(() => freed.length === 3, "the frees", 5000);
      const took = lastFree - killed;
      console.log(`[${t.name}] SIGKILLed client: freed after ${took} ms`);
      assert.deepEqual(sorted(freed), sorted(ports));
      assert.ok(took < 1000, `freed after ${took} ms, not at once`);
      assert.deepEqual(s.server.query(), []);
    },
  );

  test(
    name("the client reconnects when the server goes silent after hello"),
    async () => {
      const silence = { heartbeat: 100, timeout: 500 };
      await using fake = await fakeServer(t, (req, answer) => {
        if (req.op === "hello") answer({ ...HELLO, ...silence });
      });
      const c = connect("127.0.0.1", fake.port, { transport: t, ...fast });
      try {
        await next(c, "connect");
        const up = Date.now();
        await next(c, "disconnect", 3000);
        const took = Date.now() - up;
        console.log(
          `[${t.name}] silent server: client disconnected after ${took} ms (timeout ${silence.timeout} ms)`,
        );
        assert.ok(took >= silence.timeout - 20, `gave up after ${took} ms`);
        assert.ok(
          took <= silence.timeout + silence.heartbeat + SLACK,
          `noticed the silence only after ${took} ms`,
        );
        await next(c, "connect", 3000);
        assert.equal(fake.accepted, 2);
      } finally {
        await c.close();
      }
    },
  );

  test(
    name("the client gives up on a server that never answers hello"),
    async () => {
      await using fake = await fakeServer(t, () => {});
      const c = connect("127.0.0.1", fake.port, {
        transport: t,
        connectTimeout: 500,
        timeout: 500,
        ...fast,
      });
      let connected = false;
      c.on("connect", () => connected = true);
      try {
        await next(c, "disconnect", 3000);
        await until(() => fake.accepted >= 2, "a second attempt", 3000);
        assert.equal(connected, false);
      } finally {
        await c.close();
      }
    },
  );

  test(
    name("a client refused during the handshake retries until it gets in"),
    async () => {
      await using s = await serve(t, { maxConnections: 1 });
      const holdingTheSlot = await greeted(t, s.port);
      const c = s.client(fast);
      const port = c.service("late@1.0.0");
      port.catch(() => {}); // awaited below, unless the test fails first
      try {
        await next(c, "disconnect", 3000);
        assert.equal(c.connected, false);
      } finally {
        holdingTheSlot.close();
        await holdingTheSlot.closed;
      }
      const p = await within(port, 5000, "the service once the slot is free");
      assert.deepEqual(portsOf(s.server.query()), [p]);
    },
  );

  test(
    name("a client notices a stopped server and re-registers after SIGCONT"),
    async () => {
      await using h = holder("server", {
        heartbeat: HEARTBEAT,
        timeout: TIMEOUT,
        transport: t.name,
      });
      const { port } = await h.next<{ port: number }>("listening");
      const c = connect("127.0.0.1", port, { transport: t, ...fast });
      try {
        const ports = [await c.service("a@1.0.0"), await c.service("b@1.0.0")];
        h.signal("SIGSTOP");
        const stopped = Date.now();
        await next(c, "disconnect", 3 * TIMEOUT);
        const took = Date.now() - stopped;
        console.log(
          `[${t.name}] SIGSTOPped server: client disconnected after ${took} ms (timeout ${TIMEOUT} ms, heartbeat ${HEARTBEAT} ms)`,
        );
        assert.ok(took >= TIMEOUT - HEARTBEAT - 50, `after ${took} ms`);
        assert.ok(took <= TIMEOUT + HEARTBEAT + SLACK, `after ${took} ms`);
        assert.equal(c.connected, false);

        const reconnected = next(c, "connect", 5000);
        h.signal("SIGCONT");
        await reconnected;
        await c.query(); // answered after the re-assertions before it
        h.send({ cmd: "query" });
        const { records } = await h.next<{ records: ServiceRecord[] }>("query");
        assert.deepEqual(portsOf(records), sorted(ports));
        assert.deepEqual(records.map((r) => r.role).sort(), ["a", "b"]);
      } finally {
        h.signal("SIGCONT");
        await c.close();
      }
    },
  );

  test(
    name(
      "an allocate() cut off by a lost connection is sent again and settles",
    ),
    async () => {
      let allocations = 0;
      const flags: unknown[] = [];
      await using fake = await fakeServer(t, (req, answer, hangUp) => {
        if (req.op === "hello") answer({ ...HELLO, heartbeat: 3000 });
        if (req.op !== "allocate") return;
        flags.push(req.ready);
        if (++allocations === 1) {
          hangUp(); // before the allocation is answered
          return;
        }
        const record = { host: "127.0.0.1", port: 4321, role: "tmp" };
        answer({ ...record, version: "1.0.0", env: "", id: "x-2" });
      });
      const c = connect("127.0.0.1", fake.port, {
        transport: t,
        probe: false,
        ...fast,
      });
      try {
        const port = await within(c.allocate("tmp@1.0.0"), 3000, "allocate()");
        assert.equal(port, 4321);
        assert.equal(allocations, 2);
        assert.deepEqual(flags, [true, true], "without a probe: one request");
      } finally {
        await c.close();
      }
    },
  );

  test(
    name("free() while disconnected succeeds and the service stays gone"),
    async () => {
      await using s = await serve(t);
      const { transport, state } = partitionable(t);
      const c = connect("127.0.0.1", s.port, { transport, ...fast });
      try {
        const port = await c.service("web@1.0.0");
        state.reachable = false;
        const lost = next(c, "disconnect");
        state.conn!.close();
        await lost;
        const freeing = c.free(port);
        freeing.catch(() => {}); // awaited below
        const back = next(c, "connect");
        state.reachable = true;
        await back;
        await within(freeing, 3000, "free() to settle");
        await c.query(); // after whatever the reconnect re-asserted
        // the old connection's registration goes once the server has seen
        // it end (on etcd: one write later), and nothing brings it back
        await until(() => s.server.query().length === 0, "the old one freed");
        await c.query();
        assert.deepEqual(s.server.query(), []);
      } finally {
        await c.close();
      }
    },
  );
}

for (const t of transports()) suite(t);
