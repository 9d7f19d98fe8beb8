/**
 * Proposed ports: a client that registers services asks the server to
 * propose ports (`peek`, with a `count` for many) and checks that it can
 * bind them here; new registrations ask for them by number, visible in one
 * request (one store write) instead of allocate, probe, ready. The client
 * keeps a few checked proposals ahead; the registrations of a turn with none
 * kept wait together for one `peek`. A proposal that cannot be bound here is
 * not used, and one that another client took meanwhile falls back to the
 * usual allocation.
 * The wire is observed through a recording transport over real sockets.
 *
 * @module
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { LINE_TOO_LONG, LineSplitter } from "../protocol.ts";
import { connect } from "../mod.ts";
import type { Transport } from "../transport.ts";
import {
  freeBlock,
  serve,
  tapped,
  type TestServer,
  transports,
  within,
} from "./_helpers.ts";
import { fakeRecord, fakeServer, HELLO } from "./_raw.ts";

type Msg = { [key: string]: unknown };

/**
 * A transport that records every message each way (for one connection at a
 * time: the tests here do not reconnect).
 */
function recording(t: Transport) {
  const sent: Msg[] = [];
  const received: Msg[] = [];
  const lines = (into: Msg[]) => {
    const splitter = new LineSplitter();
    return (bytes: Uint8Array) =>
      splitter.push(bytes, (line) => {
        if (line !== LINE_TOO_LONG) into.push(JSON.parse(line));
      });
  };
  const onSent = lines(sent);
  const onReceived = lines(received);
  const transport = tapped(t, {
    read: (chunk) => chunk !== null && onReceived(chunk),
    write: onSent,
  });
  /** The ports proposed by the `peek`s answered so far, in order. */
  const proposals = (): number[] => {
    const ids = new Set(sent.filter((m) => m.op === "peek").map((m) => m.id));
    return received.filter((m) => ids.has(m.id)).flatMap((m) => {
      const r = m.result as { port?: number | null; ports?: number[] };
      return r.ports ?? (typeof r.port === "number" ? [r.port] : []);
    });
  };
  /** The ports proposed after the first two services': the ones kept. */
  const kept = (): number[] => {
    const all = proposals();
    assert.ok(all.length >= 3, `proposed: ${all.join(", ")}`);
    return all.slice(2);
  };
  return { transport, sent, received, proposals, kept };
}

/**
 * A recorded client of `s` that has registered two services, one after the
 * other: the first asks for one proposal, the second (the client has now
 * registered one at a time) for one more, and two to keep ahead.
 */
async function proposedTo(
  t: Transport,
  s: TestServer,
  options: { proposals?: number } = {},
) {
  const rec = recording(t);
  const c = s.client({ transport: rec.transport, ...options });
  const first = await c.service("first@1.0.0");
  const second = await c.service("second@1.0.0");
  await c.query("sync"); // after the peeks, answered and checked before it
  return { rec, c, first, second };
}

/** The `allocate`s a recording shows, as requests and as batch items. */
function claims(sent: Msg[]): Msg[] {
  return sent.flatMap((m) =>
    m.op === "batch" ? m.ops as Msg[] : m.op === "allocate" ? [m] : []
  );
}

function suite(t: Transport): void {
  const name = (s: string) => `[${t.name}] ${s}`;

  test(
    name("once a port is proposed, service() is visible in one request"),
    async () => {
      await using s = await serve(t);
      const { rec, c } = await proposedTo(t, s);
      const kept = rec.kept();
      const from = rec.sent.length;

      const port = await c.service("third@1.0.0");
      assert.equal(port, kept[0], "the oldest kept proposal");
      const ops = rec.sent.slice(from).map((m) => m.op);
      assert.equal(ops[0], "allocate");
      assert.ok(!ops.includes("ready"), `sent ${ops.join(", ")}`);
      const claim = rec.sent[from]!;
      assert.equal(claim.port, port);
      assert.equal(claim.ready, true);
      assert.deepEqual(s.server.query("third").map((r) => r.port), [port]);
    },
  );

  test(
    name("a proposed port that cannot be bound here is never taken"),
    async () => {
      const low = await freeBlock(t, 4);
      // the first service gets low; the second's proposals are low + 1,
      // low + 2 and low + 3
      const foreign = await t.listen({ hostname: "127.0.0.1", port: low + 1 });
      try {
        await using s = await serve(t, { range: { "*": [low, low + 3] } });
        const { rec, c, first, second } = await proposedTo(t, s);
        assert.equal(first, low);
        assert.ok(rec.proposals().includes(low + 1), "low + 1 was proposed");
        assert.equal(second, low + 2);
        const port = await c.service("third@1.0.0");
        assert.equal(port, low + 3);
        assert.ok(
          !claims(rec.sent).some((m) => m.port === low + 1),
          "the held port was asked for",
        );
        assert.ok(!s.server.query().some((r) => r.port === low + 1));
      } finally {
        foreign.close();
      }
    },
  );

  test(
    name("a proposal another client took meanwhile falls back to allocate"),
    async () => {
      await using s = await serve(t);
      const other = s.client();
      const { rec, c } = await proposedTo(t, s);
      const kept = rec.kept();
      for (const [i, p] of kept.entries()) {
        await other.assume(`squatter${i}@1.0.0`, p); // same host
      }
      const port = await c.service("third@1.0.0");
      assert.ok(!kept.includes(port), `${port} was taken`);
      const taken = rec.received.find((m) =>
        (m.error as { code?: string } | undefined)?.code === "PORT_TAKEN"
      );
      assert.ok(taken !== undefined, "the claim was not refused");
      const sent = claims(rec.sent);
      assert.equal(sent.at(-1)!.port, undefined, "then the server picks");
      const roles = s.server.query().map((r) => `${r.role}:${r.port}`).sort();
      assert.deepEqual(
        roles,
        [
          `first:${s.server.query("first")[0]!.port}`,
          `second:${s.server.query("second")[0]!.port}`,
          `third:${port}`,
          ...kept.map((p, i) => `squatter${i}:${p}`),
        ].sort(),
      );
    },
  );

  test(
    name("a proposal older than a second is not used"),
    async () => {
      await using s = await serve(t);
      const { rec, c } = await proposedTo(t, s);
      const stale = rec.kept();
      // the proposal's age is what is tested: nothing to wait for but time
      await new Promise((r) => setTimeout(r, 1100));
      const from = rec.sent.length;
      const port = await c.service("third@1.0.0");
      assert.ok(!stale.includes(port), "a stale proposal was asked for");
      const sent = rec.sent.slice(from);
      assert.equal(sent[0]!.op, "peek", "a new proposal first");
      assert.ok(rec.proposals().includes(port));
      const claim = sent.find((m) => m.op === "allocate")!;
      assert.equal(claim.port, port);
      assert.ok(!sent.some((m) => m.op === "ready"), "visible at once");
      assert.deepEqual(s.server.query("third").map((r) => r.port), [port]);
    },
  );

  test(
    name("a server without peek still gets registrations, asked once"),
    async () => {
      const low = await freeBlock(t, 2);
      let next = low;
      let peeks = 0;
      await using fake = await fakeServer(t, (req, answer, _hangUp, refuse) => {
        if (req.op === "hello") answer(HELLO);
        else if (req.op === "peek") {
          peeks++;
          refuse("BAD_REQUEST", `Bad request: unknown operation "peek"`);
        } else if (req.op === "allocate") {
          const port = next++;
          answer(fakeRecord(req, port));
        } else answer({});
      });
      const c = connect("127.0.0.1", fake.port, { transport: t });
      try {
        assert.equal(await c.service("a@1.0.0"), low);
        assert.equal(await c.service("b@1.0.0"), low + 1);
        await c.query("sync");
        assert.equal(peeks, 1, "asked again after a refusal");
      } finally {
        await c.close();
      }
    },
  );

  test(
    name("a burst of probed services takes one peek, each port once, no ready"),
    async () => {
      const N = 1500; // more than one peek proposes: two in one round trip
      await using s = await serve(t, { range: { "*": [20000, 29999] } });
      const shown: number[] = [];
      s.server.on("allocate", (r) => shown.push(r.port));
      const rec = recording(t);
      const c = s.client({ transport: rec.transport });
      await c.query("warm");
      const ports = await within(
        Promise.all(
          Array.from({ length: N }, (_, i) => c.service(`b${i}@1.0.0`)),
        ),
        20_000,
        "the burst",
      );
      assert.equal(new Set(ports).size, N, "a port twice");
      assert.equal(shown.length, N, "one allocate event each");
      assert.deepEqual(new Set(shown), new Set(ports));
      assert.equal(s.server.query().length, N);
      const peeks = rec.sent.filter((m) => m.op === "peek");
      assert.deepEqual(
        peeks.map((m) => m.count),
        [1024, N - 1024],
        "a first burst asks for what it takes",
      );
      const sent = claims(rec.sent);
      assert.equal(sent.length, N, "one allocate each");
      assert.ok(sent.every((m) => m.ready === true && m.port !== undefined));
      assert.ok(
        !rec.sent.some((m) =>
          m.op === "ready" ||
          (m.op === "batch" && (m.ops as Msg[]).some((o) => o.op === "ready"))
        ),
        "a ready was sent",
      );
    },
  );

  test(
    name("a burst never takes a port another process on this machine holds"),
    async () => {
      const low = await freeBlock(t, 300);
      // the burst's 200 proposals are low to low + 199; the three of them
      // that cannot be bound leave three registrations to allocate the
      // usual way: the server picks low + 200 next, held too
      const held = [low + 1, low + 2, low + 100, low + 200];
      const foreign = await Promise.all(
        held.map((port) => t.listen({ hostname: "127.0.0.1", port })),
      );
      try {
        await using s = await serve(t, { range: { "*": [low, low + 299] } });
        const rec = recording(t);
        const c = s.client({ transport: rec.transport });
        await c.query("warm");
        const ports = await within(
          Promise.all(
            Array.from({ length: 200 }, (_, i) => c.service(`h${i}@1.0.0`)),
          ),
          10_000,
          "the burst",
        );
        assert.equal(new Set(ports).size, 200);
        for (const p of held.slice(0, 3)) {
          assert.ok(rec.proposals().includes(p), `${p} was not proposed`);
        }
        for (const p of held) assert.ok(!ports.includes(p), `${p} handed out`);
        const visible = s.server.query().map((r) => r.port);
        for (const p of held) assert.ok(!visible.includes(p));
      } finally {
        for (const l of foreign) l.close();
      }
    },
  );

  test(
    name("the proposals option bounds the ports kept ahead"),
    async () => {
      await using s = await serve(t);
      for (const kept of [0, 5]) {
        const rec = recording(t);
        const c = s.client({ transport: rec.transport, proposals: kept });
        await c.query("warm");
        // two bursts of 100 one after the other: the first asks for what it
        // takes, the second for that and as many to keep ahead as the first
        // took, plus one, at most `kept`
        for (const burst of [0, 1]) {
          await Promise.all(
            Array.from(
              { length: 100 },
              (_, i) => c.service(`k${kept}-${burst}-${i}@1.0.0`),
            ),
          );
        }
        await c.query("sync");
        const counts = rec.sent.filter((m) => m.op === "peek").map((m) =>
          m.count
        );
        assert.deepEqual(counts, [100, 100 + kept]);
        await c.close();
      }
      for (const bad of [-1, 1.5, Number.NaN]) {
        assert.throws(
          () => s.client({ proposals: bad }),
          (err: unknown) =>
            err instanceof RangeError &&
            err.message ===
              `Option "proposals" must be a whole number of ports, 0 or more, got ${bad}`,
        );
      }
      assert.throws(
        () => s.client({ proposals: "3" as unknown as number }),
        (err: unknown) =>
          err instanceof TypeError &&
          err.message === `Option "proposals" must be a number, got string`,
      );
    },
  );

  test(
    name("a server whose hello has no peek count gets peeks without one"),
    async () => {
      const low = await freeBlock(t, 8);
      let next = low;
      const peeks: Msg[] = [];
      const claims: Msg[] = [];
      await using fake = await fakeServer(t, (req, answer) => {
        if (req.op === "hello") answer(HELLO); // no "peek": an older server
        else if (req.op === "peek") {
          peeks.push(req);
          answer({ port: next++ });
        } else if (req.op === "allocate") {
          claims.push(req);
          const port = typeof req.port === "number" ? req.port : next++;
          answer(fakeRecord(req, port));
        } else answer({});
      });
      const c = connect("127.0.0.1", fake.port, { transport: t });
      try {
        const a = await c.service("a@1.0.0");
        await c.query("sync"); // the proposal asked for after it, checked
        const b = await c.service("b@1.0.0");
        await c.query("sync");
        assert.ok(peeks.length >= 1);
        assert.ok(peeks.every((m) => m.count === undefined), "a count sent");
        assert.equal(claims[0]!.port, undefined, "the first: allocate");
        assert.equal(a, low);
        assert.deepEqual(
          [claims[1]!.port, claims[1]!.ready, b],
          [low + 1, true, low + 1],
          "the second asks for the proposal, visible at once",
        );
      } finally {
        await c.close();
      }
    },
  );

  test(
    name("clients that only look services up never ask for proposals"),
    async () => {
      await using s = await serve(t);
      const rec = recording(t);
      const c = s.client({ transport: rec.transport });
      await c.query("web");
      await c.get("web", { timeout: 50 }).catch(() => {});
      await c.query("web");
      assert.ok(!rec.sent.some((m) => m.op === "peek"));
    },
  );
}

for (const t of transports()) suite(t);
