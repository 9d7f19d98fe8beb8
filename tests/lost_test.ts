/**
 * Registrations taken away: another client's `assume` of a port, or an
 * operator's `evict`, ends the registration that held it. The server tells
 * the holder's client (a `lost` event, asked for in its hello), which forgets
 * it (it is not asserted again after a reconnect), fires its own `lost`
 * event, and rejects whatever still waits for it: never a `service()` left
 * waiting for ever.
 *
 * @module
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  connect,
  type Ports,
  RegistryError,
  type ServiceRecord,
} from "../mod.ts";
import type { Conn, Transport } from "../transport.ts";
import {
  fast,
  freePort,
  next,
  serve,
  transports,
  until,
  within,
} from "./_helpers.ts";
import { fakeRecord, fakeServer, greeted, HELLO } from "./_raw.ts";

/** A client whose connection the test can drop, and the losses it heard. */
function droppable(t: Transport, port: number) {
  let conn: Conn | undefined;
  const transport: Transport = {
    name: t.name,
    listen: (ep, tls) => t.listen(ep, tls),
    async connect(ep, tls) {
      return conn = await t.connect(ep, tls);
    },
  };
  const client = connect("127.0.0.1", port, { transport, ...fast });
  const lost: string[] = [];
  client.on(
    "lost",
    (r, reason) => lost.push(`${reason} ${r.role}@${r.version}:${r.port}`),
  );
  return {
    client,
    lost,
    /** Drops the connection and waits until the client is back. */
    async reconnect(): Promise<void> {
      const up = next(client, "connect");
      conn!.close();
      await within(up, 5000, "the reconnect");
      await client.query("none"); // after what the reconnect re-asserted
    },
  };
}

const isCode = (code: string) => (err: unknown) =>
  err instanceof RegistryError && err.code === code;

function suite(t: Transport): void {
  const name = (s: string) => `[${t.name}] ${s}`;

  test(
    name(
      "a service another client's assume takes is lost: its client is told, forgets it and does not take it back after a reconnect; a client that did not ask is sent nothing",
    ),
    async () => {
      await using s = await serve(t);
      const a = droppable(t, s.port);
      try {
        const port = await a.client.service("web@1.0.0");
        const kept = await a.client.service("api@1.0.0");
        // a raw client that did not ask to be told, holding a port too
        await using quiet = await greeted(t, s.port);
        await quiet.json({ id: 1, op: "allocate", role: "q", ready: true });
        const q = (await quiet.next()).result as ServiceRecord;
        const b = s.client();
        const other = await b.assume("other@2.0.0", port);
        await b.assume("other@2.0.0", q.port);
        await until(() => a.lost.length > 0, "A told of its lost port");
        assert.deepEqual(a.lost, [`assume web@1.0.0:${port}`]);
        await quiet.json({ id: 2, op: "ping" });
        assert.equal(
          (await quiet.next()).id,
          2,
          "nothing sent before the ping",
        );
        await assert.rejects(a.client.free(port), isCode("NOT_FOUND"));
        await a.reconnect();
        assert.deepEqual((await b.query("web")).map((r) => r.port), []);
        assert.deepEqual((await b.query("other")).map((r) => r.id), [
          other.id,
          (await b.query("other")).find((r) => r.port === q.port)!.id,
        ]);
        assert.deepEqual((await b.query("api")).map((r) => r.port), [kept]);
        assert.deepEqual(a.lost, [`assume web@1.0.0:${port}`]);
      } finally {
        await a.client.close();
      }
    },
  );

  test(
    name(
      "a registration an operator frees (evict) is lost to its client: told, and not asserted again after a reconnect",
    ),
    async () => {
      await using s = await serve(t);
      const a = droppable(t, s.port);
      try {
        const port = await a.client.service("web@1.0.0");
        const admin = s.client();
        const freed = await admin.evict("127.0.0.1", port);
        assert.equal(freed.port, port);
        await until(() => a.lost.length > 0, "A told of its freed port");
        assert.deepEqual(a.lost, [`evict web@1.0.0:${port}`]);
        await a.reconnect();
        assert.deepEqual(await admin.query("web"), []);
      } finally {
        await a.client.close();
      }
    },
  );

  test(
    name(
      "a registration its own client frees or drops is not lost: no lost event, none counted",
    ),
    async () => {
      await using s = await serve(t, {
        http: { port: 0, hostname: "127.0.0.1" },
      });
      await using a = await greeted(t, s.port, { lost: true });
      await a.json({ id: 1, op: "allocate", role: "web@1.0.0", ready: true });
      const got = await a.next();
      const record = got.result as ServiceRecord;
      await a.json({ id: 2, op: "free", rid: record.id });
      assert.deepEqual(await a.next(), { id: 2, result: record });
      await a.json({ id: 3, op: "allocate", role: "web@1.0.0", ready: true });
      assert.equal(
        (await a.next()).id,
        3,
        "the next line answers the next request: no lost event between",
      );
      a.close();
      await a.closed;
      const admin = s.client();
      await until(
        async () => (await admin.query("web")).length === 0,
        "the dropped registration freed",
      );
      const page = await (await fetch(
        `http://127.0.0.1:${s.server.httpAddr!.port}/metrics`,
      )).text();
      assert.doesNotMatch(
        page,
        /^seaport_registrations_lost_total\{[^}]*\} [1-9]/m,
      );
    },
  );

  test(
    name(
      "a lost event read while the client probes its new port: the service() rejects with LOST and is never marked ready",
    ),
    async () => {
      const port = await freePort(t);
      const ops: string[] = [];
      let hello: Record<string, unknown> = {};
      await using fake = await fakeServer(t, (req, answer, _h, _r, say) => {
        ops.push(req.op);
        if (req.op === "hello") {
          hello = req;
          answer(HELLO);
        } else if (req.op === "allocate") {
          const record = fakeRecord(req, port);
          answer(record);
          say({ ev: "lost", record, reason: "assume" });
        } else answer({});
      });
      const c = connect("127.0.0.1", fake.port, { transport: t, ...fast });
      const lost: ServiceRecord[] = [];
      c.on("lost", (r) => lost.push(r));
      try {
        await assert.rejects(
          within(c.service("web@1.0.0"), 5000, "service()"),
          isCode("LOST"),
        );
        assert.equal(hello.lost, true, "the hello asks to be told");
        assert.deepEqual(lost.map((r) => r.port), [port]);
        await c.query("none"); // a round trip: nothing else was sent before
        // (peek: proposals for the registrations to come)
        assert.deepEqual(ops.filter((op) => op !== "peek"), [
          "hello",
          "allocate",
          "query",
        ]);
      } finally {
        await c.close();
      }
    },
  );

  test(
    name(
      "a ready() the server refuses with NOT_FOUND (one that sends no lost events) rejects the service() waiting for it rather than leaving it waiting",
    ),
    async () => {
      const port = await freePort(t);
      await using fake = await fakeServer(t, (req, answer, _h, refuse) => {
        if (req.op === "hello") answer(HELLO);
        else if (req.op === "allocate") answer(fakeRecord(req, port));
        else if (req.op === "ready") {
          refuse("NOT_FOUND", "no such registration");
        } else answer({});
      });
      const c: Ports = connect("127.0.0.1", fake.port, {
        transport: t,
        ...fast,
      });
      const errors: unknown[] = [];
      c.on("error", (err) => errors.push(err));
      try {
        await assert.rejects(
          within(c.service("web@1.0.0"), 5000, "service()"),
          isCode("NOT_FOUND"),
        );
        assert.ok(errors.some(isCode("NOT_FOUND")), "reported as well");
      } finally {
        await c.close();
      }
    },
  );
}

for (const t of transports()) suite(t);
