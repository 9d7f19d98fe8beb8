/**
 * Ports held back from picks: a freed port (`reuseDelay`) and a proposed one
 * (`proposalHold`) are given to nobody else for a while, so a client whose
 * connection dropped comes back to ports nobody took meanwhile, and a port
 * proposed to one client is not proposed to another while it may take it.
 * Run on the in-memory store and, through the etcd suites, on etcd.
 *
 * @module
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "../mod.ts";
import type { Transport } from "../transport.ts";
import { freeBlock, serve, transports } from "./_helpers.ts";
import { allocateEach, greeted } from "./_raw.ts";
import { dropAndComeBack } from "./_reuse.ts";

function suite(t: Transport): void {
  const name = (s: string) => `[${t.name}] ${s}`;

  test(
    name(
      "a dropped connection's port is given to nobody else within reuseDelay: its client takes it back, nobody displaced",
    ),
    async () => {
      const low = await freeBlock(t, 10);
      await using s = await serve(t, { range: { "*": [low, low + 9] } });
      const { x, y } = await dropAndComeBack(
        t,
        s.port,
        s.port,
        () => s.server.query("svc").length === 0,
      );
      await using _x = x, _y = y;
      // holds never make a range look full, nor a full one free
      await y.json({ id: 100, op: "allocate", role: "other@1.0.0" });
      const full = await y.next();
      assert.equal(
        (full.error as { code: string }).code,
        "RANGE_EXHAUSTED",
      );
    },
  );

  test(
    name(
      "a port proposed to one client is not proposed to another while a free one nobody was proposed is left; reuseDelay 0 hands a freed port out at once",
    ),
    async () => {
      const low = await freeBlock(t, 4);
      await using s = await serve(t, {
        range: { "*": [low, low + 3] },
        reuseDelay: 0,
      });
      await using a = await greeted(t, s.port);
      await using b = await greeted(t, s.port);
      await using c = await greeted(t, s.port);
      await a.json({ id: 1, op: "peek", count: 2 });
      const offered = ((await a.next()).result as { ports: number[] }).ports;
      assert.equal(offered.length, 2);
      // C takes the other two, so the pick comes round to A's, and frees one
      const [q0, q1] = await allocateEach(c, "db@1.0.0", 2, 1);
      assert.ok(!offered.includes(q0!.port) && !offered.includes(q1!.port));
      await c.json({ id: 9, op: "free", rid: q0!.id });
      assert.ok("result" in await c.next());
      await b.json({ id: 1, op: "peek" });
      assert.equal(
        ((await b.next()).result as { port: number }).port,
        q0!.port,
        "the port freed (not held) and proposed to nobody, not one of A's",
      );
      await b.json({ id: 2, op: "peek" });
      assert.equal(
        ((await b.next()).result as { port: number }).port,
        offered[0],
        "every free port proposed: the one proposed longest ago",
      );
    },
  );

  test(
    name("bad reuseDelay and proposalHold options are refused, named"),
    () => {
      assert.throws(
        () => createServer({ reuseDelay: -5, transport: t }),
        /Option "reuseDelay" must be a number of milliseconds, 0 or more, got -5/,
      );
      assert.throws(
        () => createServer({ proposalHold: NaN, transport: t }),
        /Option "proposalHold" must be a number of milliseconds, 0 or more, got NaN/,
      );
    },
  );
}

for (const t of transports()) suite(t);
