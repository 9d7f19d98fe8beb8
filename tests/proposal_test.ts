/**
 * Proposed ports: a client that registers services asks the server to propose
 * a port (`peek`) and checks at once that it can bind it here; the next new
 * registration asks for it by number, visible in one request instead of
 * allocate, probe, ready. A proposal that cannot be bound here is not used,
 * and one that another client took meanwhile falls back to the usual
 * allocation.
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
} from "./_helpers.ts";
import { fakeServer, HELLO } from "./_raw.ts";

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
  /** The ports proposed by the `peek`s answered so far. */
  const proposals = (): number[] => {
    const ids = new Set(sent.filter((m) => m.op === "peek").map((m) => m.id));
    return received.filter((m) => ids.has(m.id))
      .map((m) => (m.result as { port: number }).port);
  };
  /** The port of the last `peek` answered so far. */
  const proposed = (): number => {
    const last = proposals().at(-1);
    assert.ok(last !== undefined, "no peek was answered");
    return last;
  };
  return { transport, sent, received, proposals, proposed };
}

/**
 * A recorded client of `s` that has registered one service and seen the
 * proposal asked for along with it answered.
 */
async function proposedTo(t: Transport, s: TestServer) {
  const rec = recording(t);
  const c = s.client({ transport: rec.transport });
  const first = await c.service("first@1.0.0");
  await c.query("sync"); // answered after the peek sent before it
  return { rec, c, first };
}

function suite(t: Transport): void {
  const name = (s: string) => `[${t.name}] ${s}`;

  test(
    name("once a port is proposed, service() is visible in one request"),
    async () => {
      await using s = await serve(t);
      const { rec, c } = await proposedTo(t, s);
      const proposal = rec.proposed();
      const from = rec.sent.length;

      const port = await c.service("second@1.0.0");
      assert.equal(port, proposal);
      const ops = rec.sent.slice(from).map((m) => m.op);
      assert.equal(ops[0], "allocate");
      assert.ok(!ops.includes("ready"), `sent ${ops.join(", ")}`);
      const claim = rec.sent[from]!;
      assert.equal(claim.port, proposal);
      assert.equal(claim.ready, true);
      assert.deepEqual(
        s.server.query("second").map((r) => r.port),
        [proposal],
      );
    },
  );

  test(
    name("a proposed port that cannot be bound here is never taken"),
    async () => {
      const low = await freeBlock(t, 4);
      // the first service gets low; the proposal after it is low + 1
      const foreign = await t.listen({ hostname: "127.0.0.1", port: low + 1 });
      try {
        await using s = await serve(t, { range: { "*": [low, low + 3] } });
        const { rec, c, first } = await proposedTo(t, s);
        assert.equal(first, low);
        assert.ok(rec.proposals().includes(low + 1), "low + 1 was proposed");
        const port = await c.service("second@1.0.0");
        assert.equal(port, low + 2);
        assert.ok(
          !rec.sent.some((m) => m.op === "allocate" && m.port === low + 1),
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
      const proposal = rec.proposed();
      await other.assume("squatter@1.0.0", proposal); // same host
      const port = await c.service("second@1.0.0");
      assert.notEqual(port, proposal);
      const taken = rec.received.find((m) =>
        (m.error as { code?: string } | undefined)?.code === "PORT_TAKEN"
      );
      assert.ok(taken !== undefined, "the claim was not refused");
      const roles = s.server.query().map((r) => `${r.role}:${r.port}`).sort();
      assert.deepEqual(
        roles,
        [
          `first:${s.server.query("first")[0]!.port}`,
          `second:${port}`,
          `squatter:${proposal}`,
        ].sort(),
      );
    },
  );

  test(
    name("a proposal older than a second is not used"),
    async () => {
      await using s = await serve(t);
      const { rec, c } = await proposedTo(t, s);
      rec.proposed(); // there is one, answered
      // the proposal's age is what is tested: nothing to wait for but time
      await new Promise((r) => setTimeout(r, 1100));
      const from = rec.sent.length;
      await c.service("second@1.0.0");
      const sent = rec.sent.slice(from);
      const claim = sent.find((m) => m.op === "allocate")!;
      assert.equal(claim.port, undefined, "the stale proposal was asked for");
      assert.ok(sent.some((m) => m.op === "ready"), "checked, then ready");
      assert.ok(s.server.query("second").length === 1);
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
          answer({
            host: "127.0.0.1",
            port,
            role: String(req.role).split("@")[0],
            version: "1.0.0",
            env: "",
            id: `x-${port}`,
          });
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
