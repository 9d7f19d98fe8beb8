/**
 * Restarts: every client's service()s come back on the same ports, once
 * each, when the server restarts (closed in-process, or killed as a process);
 * a port that a process unknown to seaport holds is never handed out; and a
 * new server never gives away a port whose service is still re-asserting.
 *
 * @module
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  connect,
  ConnectionError,
  createServer,
  type Ports,
  RegistryError,
  type ServiceRecord,
} from "../mod.ts";
import type { Listener, Transport } from "../transport.ts";
import { holder } from "./_child.ts";
import {
  fast,
  freeBlock,
  freePort,
  serve,
  testStore,
  transports,
  until,
  within,
} from "./_helpers.ts";

const CLIENTS = 100;
const SERVICES = 3;
/** The generous bound on getting every registration back, in ms. */
const BOUND = 10_000;

/** `role → port` of records, for comparing registrations across servers. */
function byRole(records: readonly ServiceRecord[]): Map<string, number> {
  return new Map(records.map((r) => [`${r.role}@${r.version}`, r.port]));
}

function assertNoPortTwice(records: readonly ServiceRecord[]): void {
  const seen = new Map<string, string>();
  for (const r of records) {
    const key = `${r.host}:${r.port}`;
    assert.equal(seen.get(key), undefined, `${key} is held twice`);
    seen.set(key, r.role);
  }
}

/** `CLIENTS` clients with `SERVICES` service()s each; resolves once all are up. */
async function fleet(port: number, t: Transport, options: object = {}) {
  const clients: Ports[] = [];
  const errors: unknown[] = [];
  for (let i = 0; i < CLIENTS; i++) {
    const c = connect("127.0.0.1", port, { transport: t, ...options });
    c.on("error", (e) => errors.push(e));
    clients.push(c);
  }
  await Promise.all(
    clients.flatMap((c, i) =>
      Array.from(
        { length: SERVICES },
        (_, j) => c.service(`c${i}s${j}@1.0.${j}`),
      )
    ),
  );
  return {
    clients,
    errors,
    /** One round trip per client: whatever it sent before is processed. */
    flush: () => Promise.all(clients.map((c) => c.query("none"))),
    close: () => Promise.all(clients.map((c) => c.close())),
  };
}

function suite(t: Transport): void {
  const name = (s: string) => `[${t.name}] ${s}`;

  test(
    name(
      `${CLIENTS} clients × ${SERVICES} services come back on the same ports after a server restart, none twice`,
    ),
    async () => {
      const port = await freePort(t);
      const store = testStore();
      let server = createServer({ transport: t, ...store });
      await server.listen(port, "127.0.0.1");
      const f = await fleet(port, t); // default reconnect options
      try {
        const before = byRole(server.query());
        assert.equal(before.size, CLIENTS * SERVICES);
        assertNoPortTwice(server.query());

        const closing = Date.now();
        await server.close();
        server = createServer({ transport: t, ...store });
        let assumed = 0;
        let freed = 0;
        let all: () => void = () => {};
        const allBack = new Promise<void>((resolve) => all = resolve);
        server.on("assume", () => {
          if (++assumed === CLIENTS * SERVICES) all();
        });
        server.on("free", () => freed++);
        await server.listen(port, "127.0.0.1");
        const listening = Date.now();
        await within(allBack, BOUND, "every service to be re-asserted");
        const back = Date.now();
        console.log(
          `[${t.name}] restart: ${
            CLIENTS * SERVICES
          } services of ${CLIENTS} clients back ${
            back - listening
          } ms after the new server listened (${
            back - closing
          } ms after the old one began closing)`,
        );
        await f.flush();
        assert.deepEqual(byRole(server.query()), before);
        assertNoPortTwice(server.query());
        assert.equal(assumed, CLIENTS * SERVICES, "each asserted once");
        assert.equal(freed, 0, "nothing replaced");
        assert.ok(f.clients.every((c) => c.connected));
        assert.deepEqual(f.errors, []);
      } finally {
        await f.close();
        await server.close();
      }
    },
  );

  test(
    name(
      `${CLIENTS} clients × ${SERVICES} services come back after the server process is killed and started again`,
    ),
    async () => {
      const port = await freePort(t);
      const options = { port, transport: t.name };
      await using first = holder("server", options);
      await first.next("listening");
      const f = await fleet(port, t);
      try {
        first.send({ cmd: "query" });
        const { records: before } = await first.next<
          { records: ServiceRecord[] }
        >("query");
        assert.equal(before.length, CLIENTS * SERVICES);

        let reconnected = 0;
        let all: () => void = () => {};
        const allConnected = new Promise<void>((resolve) => all = resolve);
        for (const c of f.clients) {
          c.on("connect", () => {
            if (++reconnected === CLIENTS) all();
          });
        }
        const killed = Date.now();
        first.signal("SIGKILL");
        await first.exited;
        await using second = holder("server", options);
        await second.next("listening");
        const listening = Date.now();
        await within(allConnected, BOUND, "every client to reconnect");
        await f.flush(); // each client's re-assertions come before this
        const back = Date.now();
        console.log(
          `[${t.name}] kill -9 and restart: every service back ${
            back - killed
          } ms after the kill, ${
            back - listening
          } ms after the new process listened`,
        );
        assert.ok(back - killed < BOUND, `${back - killed} ms`);
        second.send({ cmd: "query" });
        const { records: after } = await second.next<
          { records: ServiceRecord[] }
        >("query");
        assert.equal(after.length, CLIENTS * SERVICES);
        assert.deepEqual(byRole(after), byRole(before));
        assertNoPortTwice(after);
        assert.equal(reconnected, CLIENTS, "each client reconnected once");
      } finally {
        await f.close();
      }
    },
  );

  test(
    name("a port held by a process seaport does not know is never handed out"),
    async () => {
      const low = await freeBlock(t, 4);
      const foreign = await t.listen({ hostname: "127.0.0.1", port: low });
      try {
        await using s = await serve(t, { range: { "*": [low, low + 3] } });
        const shown: number[] = [];
        s.server.on("allocate", (r) => shown.push(r.port));
        const c = s.client();
        const ports = [
          await c.service("a@1.0.0"),
          await c.service("b@1.0.0"),
          await c.service("c@1.0.0"),
        ];
        // every other port, in whatever order the proposals came
        assert.deepEqual([...ports].sort((a, b) => a - b), [
          low + 1,
          low + 2,
          low + 3,
        ]);
        await assert.rejects(
          c.service("d@1.0.0"),
          (e: unknown) =>
            e instanceof RegistryError && e.code === "RANGE_EXHAUSTED",
        );
        assert.ok(!shown.includes(low), `${low} was made visible`);
        assert.ok(!s.server.query().some((r) => r.port === low));
        // Without the probe the server does hand it out: the probe is what
        // kept it away.
        const blind = s.client({ probe: false });
        assert.equal(await blind.service("e@1.0.0"), low);
      } finally {
        foreign.close();
      }
    },
  );

  test(
    name(
      "after a restart, new allocations never take a port whose service is still re-asserting",
    ),
    async () => {
      const low = await freeBlock(t, 10);
      const range = { "*": [low, low + 9] as [number, number] };
      const port = await freePort(t);
      let reachable = true; // false: a partition between old clients and server
      const partitioned: Transport = {
        name: t.name,
        listen: (ep, tls) => t.listen(ep, tls),
        connect: (ep, tls) =>
          reachable
            ? t.connect(ep, tls)
            : Promise.reject(new ConnectionError("partitioned")),
      };
      const listeners: Listener[] = [];
      const serving: Promise<void>[] = [];
      const listenOn = (p: number, ready: () => Promise<void>) =>
        serving.push((async () => {
          listeners.push(await t.listen({ hostname: "127.0.0.1", port: p }));
          await ready();
        })());
      const store = testStore();
      let server = createServer({ transport: t, range, ...store });
      await server.listen(port, "127.0.0.1");
      const old = [0, 1].map(() =>
        connect("127.0.0.1", port, { transport: partitioned, ...fast })
      );
      const fresh = connect("127.0.0.1", port, { transport: t, ...fast });
      try {
        const oldPorts: number[] = [];
        for (let i = 0; i < 5; i++) {
          oldPorts.push(
            await old[i % 2]!.service(
              `old${i}@1.0.0`,
              (p, ready) => void listenOn(p, ready),
            ),
          );
        }
        await Promise.all(serving);
        assert.equal(listeners.length, 5);
        const before = byRole(server.query());

        reachable = false;
        await server.close();
        server = createServer({ transport: t, range, ...store });
        let freed = 0;
        server.on("free", () => freed++);
        await server.listen(port, "127.0.0.1");
        const newPorts: number[] = [];
        for (let i = 0; i < 5; i++) {
          newPorts.push(await fresh.service(`new${i}@1.0.0`));
        }
        assert.ok(
          !server.query().some((r) => r.role.startsWith("old")),
          "the old services had not re-asserted yet",
        );
        for (const p of newPorts) {
          assert.ok(!oldPorts.includes(p), `${p} was given out twice`);
        }

        reachable = true;
        await until(() => old.every((c) => c.connected), "old clients back");
        await Promise.all(old.map((c) => c.query("none")));
        const after = server.query();
        assert.equal(after.length, 10);
        assertNoPortTwice(after);
        const now = byRole(after);
        for (const [role, p] of before) assert.equal(now.get(role), p, role);
        assert.deepEqual(
          newPorts.map((_, i) => now.get(`new${i}@1.0.0`)),
          newPorts,
        );
        assert.equal(freed, 0, "a re-assertion replaced a new allocation");
      } finally {
        await Promise.all([...old, fresh].map((c) => c.close()));
        await server.close();
        for (const l of listeners) l.close();
      }
    },
  );
}

for (const t of transports()) suite(t);
