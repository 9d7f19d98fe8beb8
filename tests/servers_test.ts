/**
 * Several servers: a client given a list of servers (or told of them in
 * `hello`) moves to the next one when its server goes, and its
 * registrations come back there on the same ports; its session id stays the
 * same across servers; bad lists are refused with the address named.
 *
 * @module
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  connect,
  type ConnectOptions,
  type Ports,
  ProtocolError,
  type ServiceRecord,
} from "../mod.ts";
import { main } from "../cli.ts";
import type { Conn, Transport } from "../transport.ts";
import { capture, closedPort } from "./_cli.ts";
import {
  fast,
  freePort,
  next,
  serve,
  tapped,
  transports,
  within,
} from "./_helpers.ts";
import { raw } from "./_raw.ts";

const address = (port: number) => `127.0.0.1:${port}`;

/** Resolves once `server` has emitted `event` `n` times. */
function events(
  server: { on(e: string, fn: (r: ServiceRecord) => void): unknown },
  event: string,
  n: number,
  what: string,
): Promise<ServiceRecord[]> {
  const seen: ServiceRecord[] = [];
  return within(
    new Promise((resolve) => {
      server.on(event, (r) => {
        seen.push(r);
        if (seen.length === n) resolve(seen);
      });
    }),
    5000,
    what,
  );
}

function suite(t: Transport): void {
  const name = (s: string) => `[${t.name}] ${s}`;
  const opts = (more: ConnectOptions = {}): ConnectOptions => ({
    transport: t,
    ...fast,
    ...more,
  });

  test(
    name(
      "a client given two servers moves to the second when the first closes, and its registrations come back there on the same ports",
    ),
    async () => {
      await using a = await serve(t);
      await using b = await serve(t);
      const c = connect(
        [address(a.port), address(b.port)],
        opts({ shuffle: false }),
      );
      try {
        const web = await c.service("web@1.0.0");
        await c.assume("db@1.0.0", 5432);
        const api = await c.service("api@1.0.0");
        await c.unready(api);
        assert.deepEqual(a.server.query("web").map((r) => r.port), [web]);
        assert.equal(b.server.connections, 0, "the first server was taken");

        const back = events(b.server, "assume", 2, "two assumes on b");
        const reconnected = next(c, "connect");
        await a.server.close();
        await reconnected;
        await back;
        await c.query("flush"); // the re-assertions before it are done
        assert.deepEqual(b.server.query("web").map((r) => r.port), [web]);
        assert.deepEqual(b.server.query("db").map((r) => r.port), [5432]);
        assert.deepEqual(b.server.query("api"), [], "still not ready");
        await c.ready(api);
        assert.deepEqual(b.server.query("api").map((r) => r.port), [api]);
      } finally {
        await c.close();
      }
    },
  );

  test(
    name("clients given two servers spread over both by default"),
    async () => {
      await using a = await serve(t);
      await using b = await serve(t);
      const list = `${address(a.port)},${address(b.port)}`;
      const clients: Ports[] = [];
      try {
        for (let i = 0; i < 20; i++) clients.push(connect(list, opts()));
        await Promise.all(clients.map((c) => c.query("flush")));
        assert.equal(a.server.connections + b.server.connections, 20);
        assert.ok(a.server.connections > 0, "none on the first server");
        assert.ok(b.server.connections > 0, "none on the second server");
      } finally {
        await Promise.all(clients.map((c) => c.close()));
      }
    },
  );

  test(
    name(
      "after losing a server that worked, a client tries it again before one that failed",
    ),
    async () => {
      await using a = await serve(t);
      const dead = await freePort(t);
      const attempts = new Map<number, number>();
      let last: Conn | undefined;
      const counting: Transport = {
        name: t.name,
        listen: (ep, tls) => t.listen(ep, tls),
        connect(ep, tls) {
          attempts.set(ep.port, (attempts.get(ep.port) ?? 0) + 1);
          return t.connect(ep, tls).then((conn) => last = conn);
        },
      };
      const c = connect(
        [address(dead), address(a.port)],
        { ...opts({ shuffle: false }), transport: counting },
      );
      try {
        await c.query("flush");
        assert.equal(attempts.get(dead), 1, "the first server was tried");
        assert.equal(attempts.get(a.port), 1);
        const reconnected = next(c, "connect");
        last!.close(); // the connection drops; the server stays up
        await reconnected;
        assert.equal(attempts.get(dead), 1, "the failed one was not retried");
        assert.equal(attempts.get(a.port), 2);
      } finally {
        await c.close();
      }
    },
  );

  test(
    name(
      "a client given one address learns the others from hello and fails over to one it was never given",
    ),
    async () => {
      await using b = await serve(t);
      let announced: string[] = [];
      await using a = await serve(t, { announce: () => announced });
      announced = [address(a.port), address(b.port)];
      const c = connect(address(a.port), opts());
      try {
        const web = await c.service("web@1.0.0");
        assert.equal(b.server.connections, 0);
        const back = events(b.server, "assume", 1, "web back on b");
        await a.server.close();
        const [record] = await back;
        assert.equal(record!.port, web);
        assert.ok(c.connected);
        assert.deepEqual(b.server.query("web").map((r) => r.port), [web]);
      } finally {
        await c.close();
      }
    },
  );

  test(
    name(
      "the hello reply lists the announced servers, and has no servers without announce",
    ),
    async () => {
      await using a = await serve(t, {
        announce: () => ["10.0.0.1:9090", "[::1]:9091"],
      });
      await using plain = await serve(t);
      for (
        const [s, servers] of [[a, ["10.0.0.1:9090", "[::1]:9091"]], [
          plain,
          undefined,
        ]] as const
      ) {
        await using r = await raw(t, s.port);
        await r.json({ id: 1, op: "hello", v: 1, session: "s-1" });
        const reply = await r.next();
        const result = reply.result as { servers?: string[] };
        assert.deepEqual(result.servers, servers);
        assert.equal("servers" in result, servers !== undefined);
      }
    },
  );

  test(
    name(
      "an announce that throws is reported by the server, and the hello goes without servers",
    ),
    async () => {
      await using a = await serve(t, {
        announce: () => {
          throw new Error("no view of the store");
        },
      });
      const reported = next(a.server, "error");
      await using r = await raw(t, a.port);
      await r.json({ id: 1, op: "hello", v: 1 });
      const reply = await r.next();
      assert.equal("servers" in (reply.result as object), false);
      const [err] = await reported;
      assert.match((err as unknown as Error).message, /no view of the store/);
    },
  );

  test(
    name(
      "an invalid announced address is reported as an error event and skipped",
    ),
    async () => {
      await using a = await serve(t, {
        announce: () => ["nope", "127.0.0.1:99999"],
      });
      const c = connect(address(a.port), opts());
      const errors: unknown[] = [];
      c.on("error", (e) => errors.push(e));
      try {
        await c.query("flush");
        assert.equal(errors.length, 2);
        for (const e of errors) assert.ok(e instanceof ProtocolError);
        assert.match(
          (errors[0] as Error).message,
          /announced an invalid server address "nope"/,
        );
        assert.match((errors[1] as Error).message, /"127\.0\.0\.1:99999"/);
      } finally {
        await c.close();
      }
    },
  );

  test(
    name(
      "a client's session id is the same across reconnects and servers, and another client's differs",
    ),
    async () => {
      await using a = await serve(t);
      await using b = await serve(t);
      const sessions: string[] = [];
      const dec = new TextDecoder();
      const spy = tapped(t, {
        write(data) {
          for (const line of dec.decode(data).split("\n")) {
            if (!line.includes('"hello"')) continue;
            sessions.push(JSON.parse(line).session);
          }
        },
      });
      const list = [address(a.port), address(b.port)];
      const c = connect(list, { ...opts({ shuffle: false }), transport: spy });
      const d = connect(list, { ...opts({ shuffle: false }), transport: spy });
      try {
        await Promise.all([c.query("flush"), d.query("flush")]);
        const reconnected = Promise.all([
          next(c, "connect"),
          next(d, "connect"),
        ]);
        await a.server.close();
        await reconnected;
        assert.equal(b.server.connections, 2);
        assert.equal(sessions.length, 4);
        for (const s of sessions) assert.match(s, /^[0-9a-f]{32}$/);
        assert.equal(new Set(sessions).size, 2, "one id per client");
        const [first, second] = sessions;
        assert.notEqual(first, second);
        assert.deepEqual(sessions.slice(2).sort(), [first, second].sort());
      } finally {
        await Promise.all([c.close(), d.close()]);
      }
    },
  );
}

test("a bad address in a list of servers is a TypeError naming it", () => {
  assert.throws(() => connect("127.0.0.1:9090,nope"), {
    name: "TypeError",
    message:
      'Invalid address "nope" in "127.0.0.1:9090,nope": expected host:port, [ipv6]:port or a port',
  });
  assert.throws(() => connect(["127.0.0.1:9090", "h2:x"]), {
    name: "TypeError",
    message: /^Invalid address "h2:x" in "127\.0\.0\.1:9090,h2:x"/,
  });
  assert.throws(() => connect("127.0.0.1:9090,,h2:9090"), {
    name: "TypeError",
    message: /^Invalid address "" in /,
  });
  assert.throws(() => connect([]), {
    name: "TypeError",
    message: "connect() was given an empty list of servers",
  });
  assert.throws(() => connect("h1:9090,h2:70000"), RangeError);
  assert.throws(
    () => connect(["h1:9090"], { shuffle: "no" } as never),
    { name: "TypeError", message: 'Option "shuffle" must be a boolean' },
  );
});

test("the command line takes a list of servers: seaport h1:p1,h2:p2 query web", async () => {
  await using s = await serve(transports()[0]!);
  const web = await s.client().service("web@1.0.0");
  const down = await closedPort();
  const out = capture();
  assert.equal(
    await main([`${address(down)},${address(s.port)}`, "query", "web"], out.io),
    0,
    out.err(),
  );
  assert.deepEqual(JSON.parse(out.out()), [address(web)]);
});

test("the command line names a bad address in its list of servers", async () => {
  const out = capture();
  assert.equal(await main(["127.0.0.1:1,h2:x", "query", "web"], out.io), 2);
  assert.match(out.err(), /Invalid address "h2:x" in "127\.0\.0\.1:1,h2:x"/);
});

for (const t of transports()) suite(t);
