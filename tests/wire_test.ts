import { test } from "node:test";
import assert from "node:assert/strict";
import type { Transport } from "../transport.ts";
import { freeBlock, serve, transports, within } from "./_helpers.ts";
import { greeted, raw } from "./_raw.ts";

const BAD_INPUT: [what: string, line: string | Uint8Array, code: string][] = [
  ["malformed JSON", "{oops\n", "PROTOCOL"],
  ["binary garbage", Uint8Array.of(0xff, 0xfe, 0, 1, 2, 0x80, 10), "PROTOCOL"],
  ["a JSON array", "[1,2,3]\n", "BAD_REQUEST"],
  ["a string id", '{"id":"1","op":"ping"}\n', "BAD_REQUEST"],
  ["a huge id", '{"id":1e400,"op":"ping"}\n', "BAD_REQUEST"],
  [
    "a huge port",
    '{"id":1,"op":"assume","role":"w","port":1e308}\n',
    "BAD_REQUEST",
  ],
  ["a negative port", '{"id":1,"op":"free","port":-5}\n', "BAD_REQUEST"],
  ["a fractional port", '{"id":1,"op":"free","port":80.5}\n', "BAD_REQUEST"],
  ["a wrong type", '{"id":1,"op":"get","pattern":["web"]}\n', "BAD_REQUEST"],
  ["an unknown op", '{"id":1,"op":"format_disk"}\n', "BAD_REQUEST"],
  [
    "a __proto__ key",
    '{"id":1,"op":"allocate","role":"w","meta":{"__proto__":{"polluted":1}}}\n',
    "BAD_REQUEST",
  ],
  [
    "a constructor key",
    '{"id":1,"op":"assume","role":"w","port":5,"meta":{"constructor":{"prototype":1}}}\n',
    "BAD_REQUEST",
  ],
  ["an invalid role", '{"id":1,"op":"allocate","role":"@@"}\n', "INVALID_ROLE"],
  [
    "an invalid range",
    '{"id":1,"op":"get","pattern":"w@>=banana"}\n',
    "INVALID_PATTERN",
  ],
  ["a second hello", '{"id":1,"op":"hello","v":1}\n', "PROTOCOL"],
  [
    "ready of a stranger's id",
    '{"id":1,"op":"ready","rid":"nope"}\n',
    "NOT_FOUND",
  ],
  ["an over-long line", "x".repeat(5000) + "\n", "LINE_TOO_LONG"],
];

function suite(t: Transport): void {
  const name = (s: string) => `[${t.name}] ${s}`;

  test(name("the PROTOCOL.md sample session replays as written"), async () => {
    await using s = await serve(t);
    await using r = await raw(t, s.port);
    await r.json({ id: 0, op: "hello", v: 1 });
    assert.deepEqual(await r.next(), {
      id: 0,
      result: {
        v: 1,
        host: "127.0.0.1",
        heartbeat: 3000,
        timeout: 10000,
        auth: null,
        batch: 1024,
        peek: 1024,
        line: 65536,
        range: [10000, 20000],
      },
    });
    await r.json({ id: 1, op: "get", pattern: "web@1.2.x" });
    await r.json({ id: 2, op: "allocate", role: "web@1.2.3", meta: { a: 1 } });
    const alloc = await r.next();
    const rec = alloc.result as { id: string; port: number };
    assert.equal(alloc.id, 2);
    assert.equal(rec.port, 10000);
    await r.json({ id: 3, op: "ready", rid: rec.id });
    // the get it satisfies is answered first, as PROTOCOL.md shows
    const replies = [await r.next(), await r.next()];
    assert.deepEqual(replies.map((x) => x.id), [1, 3]);
    assert.deepEqual(replies[0]!.result, [{
      host: "127.0.0.1",
      port: 10000,
      role: "web",
      version: "1.2.3",
      env: "",
      id: rec.id,
      a: 1,
    }]);
    await r.json({ id: 4, op: "subscribe" });
    assert.deepEqual(await r.next(), { id: 4, result: {} });
    await r.json({ id: 5, op: "free", port: 10000 });
    const two = [await r.next(), await r.next()];
    assert.ok(two.some((m) => m.ev === "free"));
    assert.ok(two.some((m) => m.id === 5));
  });

  test(
    name("bad input gets a coded error and the connection stays usable"),
    async () => {
      await using s = await serve(t, { maxLineBytes: 4096 });
      const other = s.client();
      await other.service("keep@1.0.0");
      await using r = await greeted(t, s.port);
      for (const [what, line, code] of BAD_INPUT) {
        await r.send(line);
        const reply = await r.next().catch((e) => {
          throw new Error(`${what}: ${e.message}`);
        });
        assert.equal(
          (reply.error as { code: string } | undefined)?.code,
          code,
          `${what}: ${JSON.stringify(reply)}`,
        );
        await r.json({ id: 99, op: "ping" });
        const pong = await r.next().catch((e) => {
          throw new Error(`ping after ${what}: ${e.message}`);
        });
        assert.deepEqual(pong, { id: 99, result: {} }, what);
      }
      assert.equal(({} as Record<string, unknown>).polluted, undefined);
      assert.deepEqual((await other.query()).map((x) => x.role), ["keep"]);
    },
  );

  test(
    name("an endless line without newline is cut off, memory bounded"),
    async () => {
      await using s = await serve(t, { maxLineBytes: 1024 });
      await using r = await greeted(t, s.port);
      const chunk = "z".repeat(64 * 1024);
      for (let i = 0; i < 16; i++) await r.send(chunk); // 1 MiB, no newline
      const reply = await r.next();
      assert.equal((reply.error as { code: string }).code, "LINE_TOO_LONG");
      await r.send("\n");
      await r.json({ id: 7, op: "ping" });
      assert.deepEqual(await r.next(), { id: 7, result: {} });
    },
  );

  test(
    name("peek proposes a port without reserving it; allocate takes it"),
    async () => {
      const low = await freeBlock(t, 3);
      await using s = await serve(t, { range: { "*": [low, low + 2] } });
      await using r = await greeted(t, s.port);
      await r.json({ id: 1, op: "peek" });
      assert.deepEqual(await r.next(), { id: 1, result: { port: low } });
      await r.json({ id: 2, op: "allocate", role: "a@1.0.0" });
      const other = (await r.next()).result as { port: number };
      assert.equal(other.port, low + 1, "the proposal was skipped");
      await r.json({
        id: 3,
        op: "allocate",
        role: "b@1.0.0",
        port: low,
        ready: true,
      });
      const taken = (await r.next()).result as { port: number };
      assert.equal(taken.port, low);
      assert.deepEqual(s.server.query("b").map((x) => x.port), [low]);
      await r.json({ id: 4, op: "allocate", role: "c@1.0.0", port: low });
      const refused = await r.next();
      assert.equal((refused.error as { code: string }).code, "PORT_TAKEN");
      await r.json({ id: 5, op: "peek" });
      assert.deepEqual(await r.next(), { id: 5, result: { port: low + 2 } });
      await r.json({ id: 6, op: "allocate", role: "d@1.0.0" });
      await r.next();
      await r.json({ id: 7, op: "peek" });
      assert.deepEqual(await r.next(), { id: 7, result: { port: null } });
    },
  );

  test(
    name(
      "peek with a count proposes that many distinct ports, fewer when the range is short",
    ),
    async () => {
      const low = await freeBlock(t, 5);
      await using s = await serve(t, { range: { "*": [low, low + 4] } });
      await using r = await greeted(t, s.port);
      await r.json({ id: 1, op: "peek", count: 3 });
      assert.deepEqual(await r.next(), {
        id: 1,
        result: { ports: [low, low + 1, low + 2] },
      });
      await r.json({ id: 2, op: "allocate", role: "a@1.0.0", port: low + 1 });
      await r.next();
      // the picks moved past the three; four free remain, each once
      await r.json({ id: 3, op: "peek", count: 9 });
      assert.deepEqual(await r.next(), {
        id: 3,
        result: { ports: [low + 3, low + 4, low, low + 2] },
      });
      for (const [id, count] of [[4, 0], [5, 1025], [6, 2.5], [7, "2"]]) {
        await r.json({ id, op: "peek", count });
        const reply = await r.next();
        assert.equal(reply.id, id);
        const err = reply.error as { code: string; message: string };
        assert.equal(err.code, "BAD_REQUEST");
        assert.match(err.message, /"count" must be an integer from 1 to 1024/);
      }
    },
  );

  test(name("operations before the handshake are refused"), async () => {
    await using s = await serve(t);
    await using r = await raw(t, s.port);
    await r.json({ id: 1, op: "assume", role: "web", port: 80 });
    const reply = await r.next();
    assert.equal((reply.error as { code: string }).code, "PROTOCOL");
    assert.match(
      (reply.error as { message: string }).message,
      /before the handshake/,
    );
    assert.deepEqual(s.server.query(), []);
  });

  test(name("a handshake that never completes is closed in time"), async () => {
    await using s = await serve(t, { handshakeTimeout: 100 });
    await using r = await raw(t, s.port);
    await r.send('{"id":0,"op":"hel'); // slow loris
    const reply = await r.next(2000);
    assert.match((reply.error as { message: string }).message, /timed out/);
    await within(r.closed, 2000, "the server to close the connection");
  });

  test(
    name("a wrong secret is refused a bounded number of times"),
    async () => {
      await using s = await serve(t, { secret: "s3cret", maxAuthFailures: 2 });
      await using r = await raw(t, s.port);
      await r.json({ id: 0, op: "hello", v: 1 });
      const hello = await r.next();
      const auth = (hello.result as { auth: { nonce: string } }).auth;
      assert.match(auth.nonce, /^[0-9a-f]{64}$/);
      await r.json({ id: 1, op: "query" });
      assert.equal(
        ((await r.next()).error as { code: string }).code,
        "PROTOCOL",
        "nothing before authentication",
      );
      for (let i = 2; i < 4; i++) {
        await r.json({ id: i, op: "auth", mac: "00".repeat(32) });
        const reply = await r.next();
        assert.equal((reply.error as { code: string }).code, "AUTH");
        assert.ok(!JSON.stringify(reply).includes("s3cret"));
      }
      await within(r.closed, 2000, "the server to close the connection");
    },
  );

  test(
    name("per-connection limits on gets and registrations hold"),
    async () => {
      await using s = await serve(t, {
        maxPendingGets: 3,
        maxRegistrationsPerConnection: 5,
      });
      await using r = await greeted(t, s.port);
      for (let i = 1; i <= 4; i++) {
        await r.json({ id: i, op: "get", pattern: `none${i}` });
      }
      const limit = await r.next();
      assert.equal(limit.id, 4);
      assert.equal((limit.error as { code: string }).code, "LIMIT");
      for (let i = 10; i < 16; i++) {
        await r.json({ id: i, op: "allocate", role: `svc${i}` });
      }
      const replies = await Promise.all(
        Array.from({ length: 6 }, () => r.next()),
      );
      assert.equal(replies.filter((x) => "result" in x).length, 5);
      assert.equal(
        (replies.find((x) => "error" in x)!.error as { code: string }).code,
        "LIMIT",
      );
    },
  );

  test(
    name("connections past the limit are refused, others keep working"),
    async () => {
      await using s = await serve(t, { maxConnections: 2 });
      await using a = await greeted(t, s.port);
      await using b = await greeted(t, s.port);
      await using c = await raw(t, s.port);
      const refused = await c.next();
      assert.equal((refused.error as { code: string }).code, "LIMIT");
      await within(c.closed, 2000, "the refused connection to close");
      await a.json({ id: 1, op: "ping" });
      assert.deepEqual(await a.next(), { id: 1, result: {} });
      await b.json({ id: 1, op: "ping" });
      assert.deepEqual(await b.next(), { id: 1, result: {} });
    },
  );
}

for (const t of transports()) suite(t);
