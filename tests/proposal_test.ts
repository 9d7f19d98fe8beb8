/**
 * Proposed ports: a client that registers services asks the server which port
 * it would allocate next (`peek`), and the next new registration checks that
 * port on this machine and asks for it by number, visible in one request
 * instead of allocate, probe, ready. A proposal that cannot be bound here, or
 * that another client took meanwhile, falls back to the usual allocation.
 * The wire is observed through a recording transport over real sockets.
 *
 * @module
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { LINE_TOO_LONG, LineSplitter } from "../protocol.ts";
import type { Conn, Listener, Transport } from "../transport.ts";
import { serve, transports } from "./_helpers.ts";

type Msg = { [key: string]: unknown };

/** A transport that records every message each way, on every connection. */
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
  const transport: Transport = {
    name: t.name,
    listen: (ep, tls) => t.listen(ep, tls),
    async connect(ep, tls) {
      const c = await t.connect(ep, tls);
      const onSent = lines(sent);
      const onReceived = lines(received);
      const conn: Conn = {
        localAddr: c.localAddr,
        remoteAddr: c.remoteAddr,
        get readable() {
          return c.readable;
        },
        async read() {
          const bytes = await c.read();
          if (bytes !== null) onReceived(bytes);
          return bytes;
        },
        write(data) {
          onSent(data);
          return c.write(data);
        },
        close: () => c.close(),
      };
      return conn;
    },
  };
  /** The port of the last `peek` answered so far. */
  const proposed = (): number => {
    const ids = new Set(sent.filter((m) => m.op === "peek").map((m) => m.id));
    const answers = received.filter((m) => ids.has(m.id));
    const last = answers[answers.length - 1];
    assert.ok(last !== undefined, "no peek was answered");
    return (last.result as { port: number }).port;
  };
  return { transport, sent, received, proposed };
}

function suite(t: Transport): void {
  const name = (s: string) => `[${t.name}] ${s}`;

  test(
    name("once a port is proposed, service() is visible in one request"),
    async () => {
      await using s = await serve(t);
      const rec = recording(t);
      const c = s.client({ transport: rec.transport });
      await c.service("first@1.0.0");
      await c.query("sync"); // answered after the peek sent before it
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
      await using s = await serve(t);
      const rec = recording(t);
      const c = s.client({ transport: rec.transport });
      await c.service("first@1.0.0");
      await c.query("sync");
      const proposal = rec.proposed();
      let foreign: Listener | undefined;
      try {
        foreign = await t.listen({ hostname: "127.0.0.1", port: proposal });
        const port = await c.service("second@1.0.0");
        assert.notEqual(port, proposal);
        assert.ok(
          !rec.sent.some((m) => m.op === "allocate" && m.port === proposal),
          "the held port was asked for",
        );
        assert.ok(!s.server.query().some((r) => r.port === proposal));
      } finally {
        foreign?.close();
      }
    },
  );

  test(
    name("a proposal another client took meanwhile falls back to allocate"),
    async () => {
      await using s = await serve(t);
      const rec = recording(t);
      const c = s.client({ transport: rec.transport });
      const other = s.client();
      await c.service("first@1.0.0");
      await c.query("sync");
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
