/**
 * Several seaport servers as one registry on a real etcd member: what a
 * change through one server does on the others (queries, waiting gets,
 * events, show), atomic claims racing across servers, sessions that end
 * (closed, or stopped with SIGSTOP), a ready() retried while etcd is out of
 * reach, a server whose lease ends (revoked, or cut off past its TTL), a
 * watch that breaks while etcd compacts or goes silent, and the order of
 * events and answers (every server's events in etcd's revision order). The
 * servers run in this process here; tests/etcd_failover_test.ts kills real
 * server processes.
 *
 * @module
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect, createServer } from "../mod.ts";
import type { Ports, Server, ServerOptions, ServiceRecord } from "../mod.ts";
import { createEtcdClient } from "../store/etcd/mod.ts";
import { main } from "../cli.ts";
import { capture } from "./_cli.ts";
import { etcdMissing, startEtcd } from "./_etcd.ts";
import {
  fast,
  freeBlock,
  next,
  poll,
  tapped,
  until,
  within,
} from "./_helpers.ts";
import { greeted, raw } from "./_raw.ts";
import { dropAndComeBack } from "./_reuse.ts";
import { defaultTransport } from "../transport.ts";
import { program } from "./_http.ts";
import { holder } from "./_child.ts";
import { spawnSync } from "node:child_process";

const skip = etcdMissing;

let prefixes = 0;

/** `n` servers on the same etcd and prefix, disposed together. */
async function servers(
  endpoints: string[],
  n: number,
  options: Omit<ServerOptions, "etcd"> = {},
  etcd: Partial<NonNullable<ServerOptions["etcd"]>> = {},
) {
  const prefix = `/t${++prefixes}-${Date.now().toString(36)}/`;
  const list: Server[] = [];
  const clients: Ports[] = [];
  for (let i = 0; i < n; i++) {
    const s = createServer({
      ...options,
      etcd: { endpoints, prefix, requestTimeout: 2000, ...etcd },
    });
    await s.listen(0, "127.0.0.1");
    list.push(s);
  }
  return {
    prefix,
    servers: list,
    client(i: number, opts = {}) {
      const c = connect("127.0.0.1", list[i]!.addr!.port, { ...fast, ...opts });
      clients.push(c);
      return c;
    },
    async [Symbol.asyncDispose]() {
      await Promise.all(clients.map((c) => c.close()));
      await Promise.all(list.map((s) => s.close()));
    },
  };
}

const ports = (rs: readonly ServiceRecord[]) => rs.map((r) => r.port).sort();

test(
  "several servers on one etcd member serve one registry",
  { skip },
  async (t) => {
    await using etcd = await startEtcd();

    await t.test("a service registered through A is answered by B's query, wakes a get() waiting on B, fires B's events and is in B's show", async () => {
      await using reg = await servers(etcd.endpoints, 2);
      const b = reg.client(1);
      const waiting = b.get("web@1.x");
      const events: string[] = [];
      b.on("allocate", (r) => events.push(`allocate ${r.role} ${r.port}`));
      b.on("free", (r) => events.push(`free ${r.role} ${r.port}`));
      await b.query("nothing"); // the subscription is made
      const a = reg.client(0);
      const port = await a.service("web@1.2.3", { zone: "eu" });
      const [woken] = await within(waiting, 3000, "B's get() to wake");
      assert.equal(woken?.port, port);
      assert.equal(woken?.zone, "eu");
      assert.deepEqual(ports(await b.query("web")), [port]);
      assert.deepEqual(ports(reg.servers[1]!.query("web")), [port]);
      const shown = capture();
      assert.equal(
        await main(
          [`127.0.0.1:${reg.servers[1]!.addr!.port}`, "show"],
          shown.io,
        ),
        0,
        shown.err(),
      );
      assert.deepEqual(
        JSON.parse(shown.out()).map((r: ServiceRecord) => [r.role, r.port]),
        [["web", port]],
      );
      await until(() => events.length === 1, "B's allocate event");
      await a.free(port);
      await until(() => events.length === 2, "B's free event");
      assert.deepEqual(events, [`allocate web ${port}`, `free web ${port}`]);
      assert.deepEqual(await b.query("web"), []);
    });

    await t.test("each server tells clients the registry's live servers in hello, and a client given one address fails over to another", async () => {
      await using reg = await servers(etcd.endpoints, 2, {}, { leaseTtl: 1 });
      const [a, b] = reg.servers.map((s) => `127.0.0.1:${s.addr!.port}`);
      const hello = async (port: number) => {
        await using r = await raw(defaultTransport(), port);
        await r.json({ id: 1, op: "hello", v: 1 });
        const reply = await r.next();
        return (reply.result as { servers?: string[] }).servers;
      };
      // A read the list before B announced itself: it has B by its next
      // keep-alive (every TTL / 3).
      const both = [a!, b!].sort();
      let listed: string[] | undefined;
      await poll(async () => {
        listed = await hello(reg.servers[0]!.addr!.port);
        return listed?.length === 2;
      }, "A to list both servers").catch(() => {}); // the assertion says what
      assert.deepEqual(listed, both);
      assert.deepEqual(await hello(reg.servers[1]!.addr!.port), both);
      // A client given only A learns B and moves there when A closes.
      const c = reg.client(0);
      const port = await c.service("web@1.0.0");
      await reg.servers[0]!.close();
      const back = await until(
        () => {
          const found = reg.servers[1]!.query("web");
          return found.length === 1 && found[0]!.port === port && found;
        },
        "web back through B",
      );
      assert.equal(back[0]!.port, port);
    });

    await t.test("a client reads its own writes through its server, and a change through A reaches B within one watch delivery", async () => {
      await using reg = await servers(etcd.endpoints, 2);
      const a = reg.client(0);
      const b = reg.client(1);
      for (let i = 0; i < 20; i++) {
        const port = await a.service(`svc${i}`);
        // through A at once: A applied its own write before answering
        assert.deepEqual(ports(await a.query(`svc${i}`)), [port]);
        const seen = performance.now();
        const [r] = await b.get(`svc${i}`);
        assert.equal(r?.port, port);
        assert.ok(performance.now() - seen < 1000);
      }
    });

    await t.test("two servers with 50 clients each racing for 20 ports: never a port twice, the rest RANGE_EXHAUSTED", async () => {
      await using reg = await servers(etcd.endpoints, 2, {
        range: { "*": [41000, 41019] },
      });
      const clients = Array.from(
        { length: 100 },
        (_, i) => reg.client(i % 2, { probe: false }),
      );
      const results = await Promise.allSettled(
        clients.map((c, i) => c.service(`race${i}`)),
      );
      const won = results.flatMap((r) =>
        r.status === "fulfilled" ? [r.value] : []
      );
      const lost = results.flatMap((r) =>
        r.status === "rejected" ? [r.reason] : []
      );
      assert.equal(won.length, 20, "every port is taken once");
      assert.equal(new Set(won).size, 20, "never a port twice");
      assert.equal(lost.length, 80);
      for (const err of lost) {
        assert.equal(err.code, "RANGE_EXHAUSTED");
        assert.match(
          err.message,
          /range 41000-41019 on 127\.0\.0\.1 is exhausted/,
        );
      }
      for (const s of reg.servers) {
        await until(() => s.query().length === 20, "both views to hold 20");
        assert.deepEqual(
          ports(s.query()),
          Array.from({ length: 20 }, (_, i) => 41000 + i),
        );
      }
    });

    await t.test("a client that closes, or whose connection breaks, is freed at once on every server", async () => {
      await using reg = await servers(etcd.endpoints, 2);
      const a = reg.client(0);
      const b = reg.client(1);
      await a.service("leaving");
      await b.get("leaving");
      const freed = next<[ServiceRecord]>(reg.servers[1]!, "free", 3000);
      await a.close();
      assert.equal((await freed)[0].role, "leaving");
      assert.deepEqual(reg.servers[1]!.query("leaving"), []);
      // a raw connection that just goes away
      const t0 = defaultTransport();
      const r = await greeted(t0, reg.servers[0]!.addr!.port);
      await r.json({ id: 1, op: "allocate", role: "crash", ready: true });
      await r.next();
      await b.get("crash");
      const gone = next<[ServiceRecord]>(reg.servers[1]!, "free", 3000);
      r.close();
      assert.equal((await gone)[0].role, "crash");
    });

    await t.test("connections that end while their registration is being written leave nothing behind, in etcd or on any server", async () => {
      await using reg = await servers(etcd.endpoints, 2);
      const n = 10;
      // each asks and goes away at once: its claim is still in flight
      const { shown, freed } = await sendAndVanish(reg.servers, n, (i) => ({
        id: 1,
        op: "allocate",
        role: `gone${i}`,
        ready: true,
      }));
      await until(() => shown.length === n, "B showing every claim", 3000);
      await until(() => freed.length === n, "B freeing every claim", 3000);
      assert.deepEqual(freed.sort(), shown.sort());
      // A frees them itself: B's watch may hear of a delete before A has
      // the delete's answer
      await until(
        () => reg.servers.every((s) => s.query().length === 0),
        "both views empty",
        3000,
      );
      for (const s of reg.servers) assert.deepEqual(s.query(), []);
      await using kv = createEtcdClient({ endpoints: etcd.endpoints });
      const left = await kv.kv.get(`${reg.prefix}ports/`, { prefix: true });
      assert.deepEqual(left.kvs.map((x) => x.key), []);
    });

    await t.test("connections that end while their batch's later items wait for its first leave nothing behind, in etcd or on any server", async () => {
      await using reg = await servers(etcd.endpoints, 2, {
        range: { "*": [45000, 45999] },
      });
      const n = 10;
      // each sends a batch and goes away at once: its allocation that picks
      // is in flight, its claims by number and its assume wait for it
      const { shown, freed } = await sendAndVanish(reg.servers, n, (i) => {
        const port = 45100 + i * 10;
        return {
          id: 1,
          op: "batch",
          ops: [
            { op: "allocate", role: `first${i}`, ready: true },
            { op: "allocate", role: `named${i}`, port, ready: true },
            { op: "allocate", role: `named${i}`, port: port + 1, ready: true },
            { op: "assume", role: `assumed${i}`, port: port + 2 },
          ],
        };
      });
      await until(
        () => freed.length >= n && freed.length === shown.length,
        "B freeing every claim it showed",
        3000,
      );
      // a write through A after anything those batches could still send:
      // once B shows it, etcd holds whatever A wrote before it
      const c = reg.client(0);
      const port = await c.service("after");
      await until(() => shown.includes("after"), "B showing it", 3000);
      assert.deepEqual(freed.sort(), shown.filter((x) => x !== "after").sort());
      await using kv = createEtcdClient({ endpoints: etcd.endpoints });
      const left = await kv.kv.get(`${reg.prefix}ports/`, { prefix: true });
      assert.deepEqual(left.kvs.map((x) => x.key), [
        `${reg.prefix}ports/127.0.0.1/${port}`,
      ]);
      for (const s of reg.servers) assert.deepEqual(ports(s.query()), [port]);
      await c.close();
    });

    await t.test("hosts that etcd keys must encode (IPv6 with a zone, a slash, non-ASCII) are shown, marked not ready and freed on every server", async () => {
      await using reg = await servers(etcd.endpoints, 2);
      const b = reg.servers[1]!;
      for (const host of ["fe80::1%eth0", "rack/7", "hôte-ü"]) {
        const c = reg.client(0, { advertise: host });
        const shown = next<[ServiceRecord]>(b, "allocate", 3000);
        const port = await c.service("enc");
        const [r] = await shown;
        assert.deepEqual([r.host, r.port], [host, port]);
        const hidden = next<[ServiceRecord]>(b, "free", 3000);
        await c.unready(port);
        assert.equal((await hidden)[0].host, host);
        const freed = next<[ServiceRecord]>(b, "free", 3000);
        await c.free(port);
        assert.equal((await freed)[0].host, host);
        assert.deepEqual(b.query("enc"), []);
        await c.close();
      }
    });

    await t.test("a session that comes back through another server with its hello session id takes its registrations over on the same ports", async () => {
      await using reg = await servers(etcd.endpoints, 2);
      const t0 = defaultTransport();
      const hello = { id: 0, op: "hello", v: 1, session: "s-takeover-1" };
      const first = await raw(t0, reg.servers[0]!.addr!.port);
      await first.json(hello);
      await first.next();
      await first.json({ id: 1, op: "allocate", role: "kept" });
      const held = (await first.next()).result as ServiceRecord;
      // another session is refused the port through B
      const other = await greeted(t0, reg.servers[1]!.addr!.port);
      await other.json({ id: 1, op: "allocate", role: "x", port: held.port });
      const refused = await other.next();
      assert.equal((refused.error as { code: string }).code, "PORT_TAKEN");
      // the same session through B, before A noticed anything
      const second = await raw(t0, reg.servers[1]!.addr!.port);
      await second.json(hello);
      await second.next();
      await second.json({
        id: 1,
        op: "allocate",
        role: "kept",
        port: held.port,
        ready: true,
      });
      const taken = (await second.next()).result as ServiceRecord;
      assert.equal(taken.port, held.port);
      assert.equal(taken.id, held.id, "the same registration, moved");
      // A's late end of the old connection is fenced: the registration stays
      first.close();
      await first.closed;
      await new Promise((r) => setTimeout(r, 300));
      for (const s of reg.servers) {
        assert.deepEqual(ports(s.query("kept")), [held.port]);
      }
      other.close();
      second.close();
      await second.closed;
      await until(
        () => reg.servers.every((s) => s.query("kept").length === 0),
        "the registration freed when its session ends",
      );
    });

    await t.test("B's HTTP side answers a service registered through A, and a blocking get through it wakes", async () => {
      await using reg = await servers(etcd.endpoints, 1);
      const b = createServer({
        etcd: { endpoints: etcd.endpoints, prefix: reg.prefix },
        http: { port: 0 },
      });
      await b.listen(0, "127.0.0.1");
      try {
        const base = `http://127.0.0.1:${b.httpAddr!.port}/v1/services/api`;
        const waiting = fetch(`${base}?wait=5s`).then((r) =>
          r.json() as Promise<ServiceRecord[]>
        );
        await new Promise((r) => setTimeout(r, 100)); // the wait is made
        const port = await reg.client(0).service("api@2.0.0");
        const woken = await within(waiting, 5000, "the HTTP wait");
        assert.deepEqual(woken.map((r) => r.port), [port]);
        const now = await (await fetch(base)).json() as ServiceRecord[];
        assert.deepEqual(now.map((r) => r.port), [port]);
      } finally {
        await b.close();
      }
    });

    await t.test("a stopped client (SIGSTOP) is freed on every server within its timeout, and comes back on the same ports after SIGCONT", async () => {
      const HEARTBEAT = 200;
      const TIMEOUT = 1000;
      // scheduling on a loaded machine, one etcd write (an fsync) and watch delivery
      const SLACK = 700;
      await using reg = await servers(etcd.endpoints, 2, {
        heartbeat: HEARTBEAT,
        timeout: TIMEOUT,
      }, { leaseTtl: 3 });
      const [A, B] = reg.servers as [Server, Server];
      await using h = holder("client", {
        port: B.addr!.port,
        services: 3,
        ...fast,
      });
      await h.next("connect");
      const { ports: held } = await h.next<{ ports: number[] }>("registered");
      const mine = [...held].sort();
      await until(() => ports(A.query()).join() === mine.join(), "A's view");
      const freed = { A: [] as number[], B: [] as number[] };
      const last = { A: 0, B: 0 };
      for (const [name, s] of [["A", A], ["B", B]] as const) {
        s.on("free", (r) => {
          freed[name].push(r.port);
          last[name] = Date.now();
        });
      }
      h.signal("SIGSTOP");
      const stopped = Date.now();
      await until(
        () => freed.A.length === 3 && freed.B.length === 3,
        "the stopped client's services freed on both servers",
        3 * TIMEOUT + 2000,
      );
      const took = { A: last.A - stopped, B: last.B - stopped };
      console.log(
        `SIGSTOPped client on etcd: freed after ${took.B} ms on its server, ${took.A} ms on the other (timeout ${TIMEOUT} ms, heartbeat ${HEARTBEAT} ms)`,
      );
      for (const name of ["A", "B"] as const) {
        assert.deepEqual([...freed[name]].sort(), mine);
        assert.ok(
          took[name] >= TIMEOUT - HEARTBEAT - 50,
          `freed on ${name} after ${
            took[name]
          } ms: earlier than the timeout allows`,
        );
        assert.ok(
          took[name] <= TIMEOUT + TIMEOUT / 20 + SLACK,
          `freed on ${name} after ${
            took[name]
          } ms: later than timeout + sweep + slack`,
        );
      }
      h.signal("SIGCONT");
      await h.next("connect", 5000);
      for (const s of [A, B]) {
        await until(
          () => ports(s.query()).join() === mine.join(),
          "the services back on the same ports on both servers",
        );
      }
    });

    await t.test("a ready() that fails with UNAVAILABLE is sent again until etcd takes it: its promise resolves once etcd is back, and the service is visible on every server", async () => {
      // B reaches etcd only through a proxy the test can cut.
      await using proxy = await cutProxy(etcd.endpoints[0]!);
      await using reg = await servers(etcd.endpoints, 1);
      const b = await behind(proxy, reg.prefix, {
        requestTimeout: 500,
        leaseTtl: 10, // not lost while cut off
      });
      let readies = 0; // the ready requests the client sent
      const transport = tapped(defaultTransport(), {
        write(data) {
          readies += new TextDecoder().decode(data).split('"op":"ready"')
            .length - 1;
        },
      });
      const c = connect("127.0.0.1", b.addr!.port, { ...fast, transport });
      try {
        const errors: string[] = [];
        c.on("error", (e) => errors.push((e as { code?: string }).code ?? ""));
        let resolved = false;
        let readied: Promise<void> = Promise.resolve();
        const port = await c.service("web@1.0.0", (_port, ready) => {
          proxy.cut(); // the reservation is in etcd, the ready cannot be
          readied = ready();
        });
        readied.then(() => resolved = true, () => {});
        await until(() => errors.length > 0, "the ready's UNAVAILABLE", 5000);
        assert.deepEqual(errors, ["UNAVAILABLE"]);
        assert.equal(resolved, false, "ready() waits");
        assert.deepEqual(reg.servers[0]!.query("web"), [], "not visible yet");
        await until(() => readies >= 3, "two retries while cut off", 8000);
        proxy.restore();
        await within(readied, 8000, "ready() once etcd is back");
        await until(
          () => reg.servers[0]!.query("web")[0]?.port === port,
          "the service visible through A",
        );
        assert.deepEqual(ports(b.query("web")), [port]);
        assert.deepEqual(errors, ["UNAVAILABLE"], "one report for the run");
        console.log(`ready() sent ${readies} times before etcd took it`);
      } finally {
        await c.close();
        await b.close();
      }
    });

    await t.test("a server whose etcd lease is revoked takes a new one and drops its connections: its clients assert their registrations again on the same ports, on every server", async () => {
      await using reg = await servers(etcd.endpoints, 2, {}, { leaseTtl: 3 });
      const a = reg.client(0);
      const b = reg.client(1);
      const stay = await a.service("stay");
      const web = await b.service("web");
      const db = await b.service("db");
      const later = await b.service("later", (_port, _ready) => {}); // hidden
      const seen = { a: [] as string[], b: [] as string[] };
      for (const [name, c] of [["a", a], ["b", b]] as const) {
        c.on("disconnect", () => seen[name].push("disconnect"));
        c.on("connect", () => seen[name].push("connect"));
      }
      const all = [stay, web, db].sort();
      for (const s of reg.servers) {
        await until(() => ports(s.query()).join() === all.join(), "both views");
      }
      const c = createEtcdClient({ endpoints: etcd.endpoints });
      try {
        const key = await c.kv.get(`${reg.prefix}ports/127.0.0.1/${web}`);
        const lease = key.kvs[0]!.lease;
        const before = await c.kv.get(`${reg.prefix}ports/127.0.0.1/${stay}`);
        assert.notEqual(
          before.kvs[0]!.lease,
          lease,
          "A has a lease of its own",
        );
        const revoked = Date.now();
        await c.lease.revoke(lease);
        await until(() => seen.b.includes("connect"), "B's client back", 8000);
        for (const s of reg.servers) {
          await until(
            () => ports(s.query()).join() === all.join(),
            "every service back on its port on every server",
            8000,
          );
        }
        console.log(
          `lease revoked: B's clients back on their ports after ${
            Date.now() - revoked
          } ms (lease TTL 3 s, keep-alive every 1 s)`,
        );
        // the hidden reservation is back too, on its port, still hidden (its
        // re-assertion may land after the visible ones)
        let held = await c.kv.get(`${reg.prefix}ports/127.0.0.1/${later}`);
        await poll(async () => {
          held = await c.kv.get(`${reg.prefix}ports/127.0.0.1/${later}`);
          return held.kvs.length === 1;
        }, "the reservation to be back in etcd");
        assert.equal(held.kvs.length, 1, "the reservation is back in etcd");
        assert.equal(JSON.parse(held.kvs[0]!.value).ready, false);
        const now = await c.kv.get(`${reg.prefix}ports/`, { prefix: true });
        assert.equal(now.kvs.length, 4, "nothing twice");
        const leases = new Set(now.kvs.map((kv) => kv.lease));
        assert.ok(!leases.has(lease), "nothing on the revoked lease");
        assert.deepEqual(seen.a, [], "A's client untouched");
        assert.deepEqual(
          ports(reg.servers[0]!.query("stay")),
          [stay],
        );
      } finally {
        await c.close();
      }
    });

    await t.test("a server cut off from etcd for longer than its lease TTL makes its clients assert their registrations again once it is back: same ports, on every server", async () => {
      await using proxy = await cutProxy(etcd.endpoints[0]!);
      await using reg = await servers(etcd.endpoints, 1);
      const b = await behind(proxy, reg.prefix, {
        requestTimeout: 500,
        leaseTtl: 2,
      });
      const a = reg.client(0);
      const c = connect("127.0.0.1", b.addr!.port, fast);
      try {
        const stay = await a.service("stay");
        const web = await c.service("web");
        const db = await c.service("db");
        const all = [stay, web, db].sort();
        const A = reg.servers[0]!;
        await until(() => ports(A.query()).join() === all.join(), "A's view");
        let reconnected = false;
        c.on("connect", () => reconnected = true);
        proxy.cut();
        const cut = Date.now();
        // etcd ends B's lease: its registrations go from every other view
        await until(
          () => ports(A.query()).join() === String(stay),
          "B's lease to expire",
          8000,
        );
        const expired = Date.now() - cut;
        assert.ok(!reconnected, "B keeps its connections while cut off");
        proxy.restore();
        await until(() => reconnected, "B's client to reconnect", 8000);
        for (const s of [A, b]) {
          await until(
            () => ports(s.query()).join() === all.join(),
            "every service back on its port on every server",
            8000,
          );
        }
        console.log(
          `cut off for ${expired} ms (lease TTL 2 s): B's clients back on their ports ${
            Date.now() - cut - expired
          } ms after etcd was reachable again`,
        );
        const e = createEtcdClient({ endpoints: etcd.endpoints });
        try {
          const now = await e.kv.get(`${reg.prefix}ports/`, { prefix: true });
          assert.equal(now.kvs.length, 3, "nothing twice");
        } finally {
          await e.close();
        }
      } finally {
        await c.close();
        await b.close();
      }
    });

    await t.test("/readyz and /metrics say whether etcd is reachable: 503 and seaport_etcd_reachable 0 while it is cut off, ready again after", async () => {
      await using proxy = await cutProxy(etcd.endpoints[0]!);
      const b = await behind(
        proxy,
        `/t-ready-${Date.now().toString(36)}/`,
        { requestTimeout: 500, leaseTtl: 2 },
        { http: { port: 0 } },
      );
      try {
        const base = `http://127.0.0.1:${b.httpAddr!.port}`;
        const state = async () => {
          const ready = await fetch(`${base}/readyz`);
          const body = await ready.json() as { store?: string };
          const page = await (await fetch(`${base}/metrics`)).text();
          const reachable = /^seaport_etcd_reachable (\d)$/m.exec(page)?.[1];
          return { status: ready.status, body, page, reachable };
        };
        const up = await state();
        assert.equal(up.status, 200);
        assert.equal(up.body.store, "etcd");
        assert.equal(up.reachable, "1");
        assert.match(
          up.page,
          /^seaport_info\{version="[^"]+",store="etcd"\} 1$/m,
        );
        assert.match(up.page, /^seaport_etcd_watch_silence_seconds \d/m);
        assert.match(up.page, /^seaport_etcd_resyncs_total \d+$/m);
        const promtool = program("promtool", "/usr/bin/promtool");
        if (promtool !== undefined) {
          const check = spawnSync(promtool, ["check", "metrics"], {
            input: up.page,
            encoding: "utf8",
          });
          assert.equal(check.stdout + check.stderr, "");
        }
        proxy.cut();
        let down = up;
        await poll(async () => (down = await state()).status === 503, "503")
          .catch(() => {});
        assert.equal(down.status, 503);
        assert.equal(down.reachable, "0");
        assert.equal((down.body as { code?: string }).code, "UNAVAILABLE");
        proxy.restore();
        let back = down;
        await poll(async () => (back = await state()).status === 200, "200")
          .catch(() => {});
        assert.equal(back.status, 200);
        assert.equal(back.reachable, "1");
      } finally {
        await b.close();
      }
    });

    await t.test("a broken watch resynchronises after etcd compacted its history: nothing lost, nothing invented", async () => {
      // B reaches etcd only through a proxy the test can cut.
      await using proxy = await cutProxy(etcd.endpoints[0]!);
      await using reg = await servers(etcd.endpoints, 1);
      const prefix = reg.prefix;
      const b = await behind(proxy, prefix, { requestTimeout: 1000 });
      try {
        const a = reg.client(0);
        const stay = await a.service("stay");
        const go = await a.service("go");
        await until(() => b.query().length === 2, "B's view of both");
        proxy.cut();
        // while B is deaf: one goes, one comes, history is compacted
        await a.free(go);
        const come = await a.service("come");
        const c = createEtcdClient({ endpoints: etcd.endpoints });
        const { header } = await c.kv.get("/");
        await c.kv.compact(header.revision);
        await c.close();
        assert.deepEqual(
          ports(b.query()),
          [go, stay].sort(),
          "stale meanwhile",
        );
        const events: string[] = [];
        b.on("allocate", (r) => events.push(`allocate ${r.role}`));
        b.on("free", (r) => events.push(`free ${r.role}`));
        proxy.restore();
        await until(
          () => ports(b.query()).join() === [come, stay].sort().join(),
          "B's view to resynchronise",
          8000,
        );
        assert.deepEqual(events.sort(), ["allocate come", "free go"]);
        assert.deepEqual(
          b.query().map((r) => r.role).sort(),
          ["come", "stay"],
        );
      } finally {
        await b.close();
      }
    });

    await t.test("batches through two servers: every server's subscribers see every change in etcd's revision order", async () => {
      await using reg = await servers(etcd.endpoints, 2, {
        range: { "*": [42000, 42899] },
      });
      const t0 = defaultTransport();
      // etcd's own order: a watch of the registry's keys, beside the servers
      const c = createEtcdClient({ endpoints: etcd.endpoints });
      const w = c.watcher.watch(`${reg.prefix}ports/`, { prefix: true });
      const truth: string[] = [];
      const watching = (async () => {
        for await (const batch of w) {
          for (const ev of batch.events) {
            truth.push(
              `${ev.type === "put" ? "allocate" : "free"} ${
                ev.kv.key.split("/").pop()
              }`,
            );
          }
        }
      })();
      try {
        assert.ok(await w.ready);
        const subscribed = await Promise.all(reg.servers.map(async (s) => {
          const r = await greeted(t0, s.addr!.port);
          await r.json({ id: 1, op: "subscribe", all: true });
          assert.deepEqual(await r.next(), { id: 1, result: {} });
          return r;
        }));
        const ROUNDS = 8;
        const total = 6 * ROUNDS * 8;
        const heard = Promise.all(subscribed.map(async (r) => {
          const list: string[] = [];
          while (list.length < total) {
            const m = await r.next(10_000);
            list.push(`${m.ev} ${(m.record as ServiceRecord).port}`);
          }
          return list;
        }));
        heard.catch(() => {}); // awaited below
        // three connections through each server, each a run of batches:
        // three allocations in one txn, a named port claimed and freed
        // behind a barrier, then the three freed one after the other
        const writers = Array.from({ length: 6 }, async (_, i) => {
          const r = await greeted(t0, reg.servers[i % 2]!.addr!.port);
          for (let round = 0; round < ROUNDS; round++) {
            const named = 42900 + i * 10 + round;
            await r.json({
              id: 1,
              op: "batch",
              ops: [
                { op: "allocate", role: `a${i}@1.0.0`, ready: true },
                { op: "allocate", role: `b${i}@1.0.0`, ready: true },
                { op: "allocate", role: `c${i}@1.0.0`, ready: true },
                {
                  op: "allocate",
                  role: `n${i}@1.0.0`,
                  port: named,
                  ready: true,
                },
                { op: "free", port: named },
              ],
            });
            const made = (await r.next(10_000)).result as {
              result?: ServiceRecord;
            }[];
            assert.equal(made.length, 5, JSON.stringify(made));
            const ids = made.slice(0, 3).map((m) => m.result!.id);
            await r.json({
              id: 2,
              op: "batch",
              ops: ids.map((rid) => ({ op: "free", rid })),
            });
            const freed = (await r.next(10_000)).result as unknown[];
            assert.ok(freed.every((f) => "result" in (f as object)));
          }
          r.close();
        });
        await within(Promise.all(writers), 30_000, "every batch");
        await until(() => truth.length >= total, "etcd's events", 10_000);
        const lists = await within(heard, 10_000, "the events");
        for (const [i, list] of lists.entries()) {
          assert.deepEqual(list, truth, `server ${i} in revision order`);
        }
        for (const r of subscribed) r.close();
      } finally {
        await w.close();
        await watching;
        await c.close();
      }
    });

    await t.test("while a write of a connection is in flight to etcd, that connection's later requests wait for it: they stay in order and see it", async () => {
      await using reg = await servers(etcd.endpoints, 1, {
        range: { "*": [43000, 43099] },
      });
      await using r = await greeted(
        defaultTransport(),
        reg.servers[0]!.addr!.port,
      );
      // one chunk: every line is read while the first write is in flight
      const lines = [
        { id: 1, op: "allocate", role: "seq@1.0.0", port: 43050, ready: true },
        { id: 2, op: "query", pattern: "seq" },
        { id: 3, op: "free", port: 43050 },
        { id: 4, op: "query", pattern: "seq" },
        { id: 5, op: "allocate", role: "seq@1.0.1", ready: true },
        { id: 6, op: "query", pattern: "seq" },
      ];
      await r.send(lines.map((l) => JSON.stringify(l) + "\n").join(""));
      const got = [];
      for (let i = 0; i < lines.length; i++) got.push(await r.next());
      assert.deepEqual(got.map((m) => m.id), [1, 2, 3, 4, 5, 6]);
      const first = got[0]!.result as ServiceRecord;
      assert.equal(first.port, 43050);
      assert.deepEqual(
        (got[1]!.result as ServiceRecord[]).map((x) => x.port),
        [43050],
      );
      assert.equal((got[2]!.result as ServiceRecord).port, 43050);
      assert.deepEqual(got[3]!.result, []);
      const fifth = got[4]!.result as ServiceRecord;
      assert.deepEqual(
        (got[5]!.result as ServiceRecord[]).map((x) => x.port),
        [fifth.port],
      );
    });

    await t.test("a client that sends no session comes back through another server with assume on its ports; a reservation asked for by number is refused while the old one lasts", async () => {
      await using reg = await servers(etcd.endpoints, 2, {
        range: { "*": [44000, 44099] },
      });
      const t0 = defaultTransport();
      const [a, b] = reg.servers.map((s) => s.addr!.port);
      // the client's first connection, through A, with no session id: a
      // ready service and a reservation not yet ready
      const old = await greeted(t0, a!);
      await old.json({ id: 1, op: "allocate", role: "svc@1.0.0", ready: true });
      const svc = (await old.next()).result as ServiceRecord;
      await old.json({ id: 2, op: "allocate", role: "res@1.0.0" });
      const res = (await old.next()).result as ServiceRecord;
      await until(
        () => reg.servers[1]!.query("svc").length === 1,
        "B's view of the service",
      );
      // it comes back through B (A has not noticed: its connection stays,
      // as when A died and its lease lasts)
      await using back = await greeted(t0, b!);
      await back.json({
        id: 1,
        op: "assume",
        role: "svc@1.0.0",
        port: svc.port,
      });
      const assumed = (await back.next()).result as ServiceRecord;
      assert.equal(assumed.port, svc.port);
      await back.json({
        id: 2,
        op: "allocate",
        role: "res@1.0.0",
        port: res.port,
      });
      const refused = await back.next();
      assert.equal((refused.error as { code: string }).code, "PORT_TAKEN");
      await back.json({ id: 3, op: "allocate", role: "res@1.0.0" });
      const moved = (await back.next()).result as ServiceRecord;
      assert.notEqual(moved.port, res.port);
      for (const s of reg.servers) {
        await until(
          () => s.query("svc").map((x) => x.id).join() === assumed.id,
          "the assumed service on both servers",
        );
      }
      // A notices the old connection's end: its delete of the service's key
      // is fenced (B rewrote it), the old reservation is freed
      old.close();
      await old.closed;
      await using probe = await greeted(t0, a!);
      await poll(async () => {
        await probe.json({
          id: 1,
          op: "allocate",
          role: "later@1.0.0",
          port: res.port,
        });
        const m = await probe.next();
        return "result" in m;
      }, "the old reservation's port to be free");
      // A's deletes of the old keys went to etcd together: the fenced one
      // was answered too
      for (const s of reg.servers) {
        assert.deepEqual(
          s.query("svc").map((x) => [x.id, x.port]),
          [[assumed.id, svc.port]],
        );
      }
      await probe.json({
        id: 2,
        op: "allocate",
        role: "x@1.0.0",
        port: svc.port,
      });
      const stillHeld = await probe.next();
      assert.equal((stillHeld.error as { code: string }).code, "PORT_TAKEN");
    });

    await t.test("a service re-asserted with assume displaces what another client got on its port meanwhile, and its own server tells the displaced client (lost); so it does a client whose port an operator freed through the other server", async () => {
      await using reg = await servers(etcd.endpoints, 2, {
        range: { "*": [44100, 44199] },
      });
      const t0 = defaultTransport();
      const [a, b] = reg.servers.map((s) => s.addr!.port);
      const hello = { id: 0, op: "hello", v: 1, session: "s-displace-1" };
      // X's service, through A
      const first = await raw(t0, a!);
      await first.json(hello);
      await first.next();
      await first.json({
        id: 1,
        op: "allocate",
        role: "svc@1.0.0",
        ready: true,
      });
      const svc = (await first.next()).result as ServiceRecord;
      // X's connection drops: A frees its port
      first.close();
      await first.closed;
      await until(
        () => reg.servers.every((s) => s.query("svc").length === 0),
        "the dropped connection's service freed on both servers",
      );
      // meanwhile another client gets the port through B (and a third holds
      // another port there)
      await using y = await greeted(t0, b!, { lost: true });
      await using w = await greeted(t0, b!, { lost: true });
      await w.json({ id: 1, op: "allocate", role: "w@1.0.0", ready: true });
      const wRecord = (await w.next()).result as ServiceRecord;
      await y.json({
        id: 1,
        op: "allocate",
        role: "other@1.0.0",
        port: svc.port,
        ready: true,
      });
      const got = (await y.next()).result as ServiceRecord;
      assert.equal(got.port, svc.port);
      // X comes back through A and re-asserts its port: it replaces Y's
      await using second = await raw(t0, a!);
      await second.json(hello);
      await second.next();
      await second.json({
        id: 1,
        op: "assume",
        role: "svc@1.0.0",
        port: svc.port,
      });
      const back = (await second.next()).result as ServiceRecord;
      assert.equal(back.port, svc.port);
      for (const s of reg.servers) {
        await until(
          () =>
            s.query("other").length === 0 &&
            s.query("svc").map((x) => x.id).join() === back.id,
          "X's service on both servers, Y's gone",
        );
      }
      // Y is told, by B, that it lost its registration to an assume
      const told = await y.next();
      assert.deepEqual(told, { ev: "lost", record: got, reason: "assume" });
      // an operator's free of W's port, through A: B (its lease alive) tells W
      await using admin = await greeted(t0, a!);
      await admin.json({
        id: 1,
        op: "evict",
        host: wRecord.host,
        port: wRecord.port,
      });
      assert.ok("result" in await admin.next());
      assert.deepEqual(await w.next(), {
        ev: "lost",
        record: wRecord,
        reason: "evict",
      });
      await y.json({ id: 9, op: "ping" });
      assert.equal((await y.next()).id, 9, "Y told nothing more");
      // X frees it: nobody holds the port, and Y knows it holds nothing
      await second.json({ id: 2, op: "free", rid: back.id });
      assert.ok("result" in await second.next());
      for (const s of reg.servers) {
        await until(
          () => s.query("svc").length === 0 && s.query("other").length === 0,
          "the port free on both servers",
        );
      }
      await y.json({ id: 2, op: "free", rid: got.id });
      const late = await y.next();
      assert.equal((late.error as { code: string }).code, "NOT_FOUND");
    });

    await t.test("a port freed through one server is passed over by the other for reuseDelay: its client comes back to it through the first, nobody displaced", async () => {
      const t0 = defaultTransport();
      const low = await freeBlock(t0, 10);
      await using reg = await servers(etcd.endpoints, 2, {
        range: { "*": [low, low + 9] },
      });
      const [a, b] = reg.servers.map((s) => s.addr!.port);
      // X through A, Y through B: B passes over the port A saw freed
      const { x, y } = await dropAndComeBack(
        t0,
        a!,
        b!,
        () => reg.servers.every((s) => s.query("svc").length === 0),
      );
      await using _x = x, _y = y;
    });

    await t.test("a server whose watch delivers nothing still answers its own writes, at most watchWait late, their events first", async () => {
      await using proxy = await cutProxy(etcd.endpoints[0]!);
      await using reg = await servers(etcd.endpoints, 1);
      const b = await behind(proxy, reg.prefix, {
        requestTimeout: 2000,
        watchWait: 300,
      });
      const c = connect("127.0.0.1", b.addr!.port, { ...fast, probe: false });
      try {
        await c.query("x"); // connected
        const events: string[] = [];
        b.on("allocate", (r) => events.push(`allocate ${r.role}`));
        proxy.mute();
        const t0 = performance.now();
        const port = await c.service("quiet");
        const took = performance.now() - t0;
        console.log(
          `a write's answer with its watch silent: ${took.toFixed(0)} ms`,
        );
        // held for the watch (300 ms), not the default's second
        assert.ok(took >= 290 && took < 900, `answered after ${took} ms`);
        assert.deepEqual(
          events,
          ["allocate quiet"],
          "its event went out first",
        );
        assert.deepEqual(ports(b.query("quiet")), [port]);
        // A's change reaches B once its watch speaks again, and the echo of
        // B's own write adds nothing
        const a = reg.client(0);
        const other = await a.service("loud");
        proxy.unmute();
        await until(() => events.length === 2, "A's change through B's watch");
        assert.deepEqual(events, ["allocate quiet", "allocate loud"]);
        assert.deepEqual(ports(b.query()), [port, other].sort());
      } finally {
        await c.close();
        await b.close();
      }
    });
  },
);

/**
 * `n` raw connections to the first of `servers` that each send `request(i)`
 * and close at once, closed by the time this resolves; the roles the second
 * server showed and freed meanwhile, and from then on.
 */
async function sendAndVanish(
  servers: Server[],
  n: number,
  request: (i: number) => Record<string, unknown>,
): Promise<{ shown: string[]; freed: string[] }> {
  const shown: string[] = [];
  const freed: string[] = [];
  servers[1]!.on("allocate", (r) => shown.push(r.role));
  servers[1]!.on("free", (r) => freed.push(r.role));
  const t = defaultTransport();
  const port = servers[0]!.addr!.port;
  const conns = await Promise.all(
    Array.from({ length: n }, () => greeted(t, port)),
  );
  await Promise.all(conns.map(async (r, i) => {
    await r.json(request(i));
    r.close();
  }));
  await Promise.all(conns.map((r) => r.closed));
  return { shown, freed };
}

/**
 * A server listening on loopback that reaches etcd only through `proxy`,
 * keeping its registry under `prefix`.
 */
async function behind(
  proxy: { url: string },
  prefix: string,
  etcd: { requestTimeout: number; leaseTtl?: number; watchWait?: number },
  options: ServerOptions = {},
): Promise<Server> {
  const s = createServer({
    ...options,
    etcd: { endpoints: [proxy.url], prefix, ...etcd },
  });
  await s.listen(0, "127.0.0.1");
  return s;
}

/**
 * A TCP proxy to `target` that the test can cut (every connection reset,
 * new ones refused) and restore, or whose watch streams it can mute (what
 * etcd sends on them held back until unmuted).
 */
async function cutProxy(target: string) {
  const { createServer: netServer, connect: netConnect } = await import(
    "node:net"
  );
  const url = new URL(target);
  const sockets = new Set<import("node:net").Socket>();
  let cut = false;
  let muted = false;
  const held: [import("node:net").Socket, Uint8Array][] = [];
  const server = netServer((client) => {
    if (cut) return client.destroy();
    const upstream = netConnect(Number(url.port), url.hostname);
    sockets.add(client).add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
    let watch = false;
    client.on("data", (d: Uint8Array) => {
      // a connection that carries a watch carries nothing else after it
      watch ||= new TextDecoder().decode(d).includes("/v3/watch");
      upstream.write(d);
    });
    upstream.on("data", (d: Uint8Array) => {
      if (muted && watch) held.push([client, d]);
      else client.write(d);
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    cut() {
      cut = true;
      for (const s of sockets) s.destroy();
    },
    restore() {
      cut = false;
    },
    mute() {
      muted = true;
    },
    unmute() {
      muted = false;
      for (const [socket, d] of held.splice(0)) {
        if (!socket.destroyed) socket.write(d);
      }
    },
    async [Symbol.asyncDispose]() {
      cut = true;
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

test("bad etcd store options are refused with an error naming them", () => {
  const endpoints = ["http://127.0.0.1:2379"];
  assert.throws(
    () => createServer({ etcd: { endpoints, watchWait: -1 } }),
    /Option "etcd\.watchWait" must be a number of milliseconds, 0 or more, got -1/,
  );
  assert.throws(
    () => createServer({ etcd: { endpoints, leaseTtl: 0 } }),
    /Option "etcd\.leaseTtl" must be a positive integer \(seconds\), got 0/,
  );
  assert.throws(
    () => createServer({ etcd: { endpoints, prefix: "" } }),
    /Option "etcd\.prefix" must be a non-empty string/,
  );
});
