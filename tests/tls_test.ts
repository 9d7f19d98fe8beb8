/**
 * TLS: a TLS server and a client that trusts its certificate work as over
 * plain TCP; every mismatch (TLS against plain, plain against TLS, an
 * untrusted certificate) is refused and registers nothing. The certificate is
 * made with openssl for each run; without openssl the tests are skipped.
 *
 * @module
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { ConnectionError, type Ports } from "../mod.ts";
import type { Transport } from "../transport.ts";
import {
  makeCertificate,
  next,
  serve,
  tapped,
  transports,
  until,
  within,
} from "./_helpers.ts";

const fast = { reconnectDelay: 20, maxReconnectDelay: 100 };

const made = makeCertificate("IP:127.0.0.1,DNS:localhost");
const skip = typeof made === "string" ? made : false;
const pem = typeof made === "string" ? { cert: "", key: "" } : made;
/** A certificate for names other than the ones connected to. */
const other = makeCertificate("IP:127.0.0.2,DNS:elsewhere.invalid");
const otherPem = typeof other === "string" ? { cert: "", key: "" } : other;

/** Records what a client reports: connects and disconnect reasons. */
function watch(c: Ports) {
  const seen = { connects: 0, disconnects: [] as unknown[] };
  c.on("connect", () => seen.connects++);
  c.on("disconnect", (err) => seen.disconnects.push(err));
  return seen;
}

function suite(t: Transport): void {
  const name = (s: string) => `[${t.name}] ${s}`;

  test(
    name("a TLS client that trusts the certificate registers and finds"),
    { skip },
    async () => {
      await using s = await serve(t, { tls: pem });
      const a = s.client({ tls: { caCerts: [pem.cert] } });
      const b = s.client({ tls: { caCerts: [pem.cert] } });
      const found = b.get("web@1.x");
      const port = await a.service("web@1.2.3", { secure: true });
      const [r] = await within(found, 5000, "get over TLS");
      assert.equal(r!.port, port);
      assert.equal(r!.secure, true);
      assert.equal(a.host, "127.0.0.1");
      assert.deepEqual(s.server.query().map((x) => x.port), [port]);
      assert.ok(a.connected && b.connected);
    },
  );

  test(
    name("a TLS client refuses a plain server and never connects"),
    { skip },
    async () => {
      await using s = await serve(t);
      const c = s.client({ tls: { caCerts: [pem.cert] }, ...fast });
      const seen = watch(c);
      const pending = c.service("web@1.0.0");
      pending.catch(() => {});
      const [err] = await next(c, "disconnect", 5000);
      assert.ok(err instanceof ConnectionError, String(err));
      await until(() => seen.disconnects.length >= 3, "two more attempts");
      assert.ok(seen.disconnects.every((e) => e instanceof ConnectionError));
      assert.equal(seen.connects, 0);
      assert.equal(c.connected, false);
      assert.deepEqual(s.server.query(), []);
    },
  );

  test(
    name("a plain client never gets through to a TLS server"),
    { skip },
    async () => {
      await using s = await serve(t, { tls: pem });
      let ended = 0;
      const counting = tapped(t, {
        read: (chunk) => {
          if (chunk === null) ended++;
        },
      });
      const c = s.client({ transport: counting, ...fast });
      const seen = watch(c);
      const pending = c.service("web@1.0.0");
      pending.catch(() => {});
      await until(() => ended > 0, "the server to drop the connection");
      assert.equal(seen.connects, 0);
      assert.equal(c.connected, false);
      assert.deepEqual(s.server.query(), []);
    },
  );

  test(
    name("a plain client reports a TLS server's refusal and keeps trying"),
    { skip },
    async () => {
      await using s = await serve(t, { tls: pem });
      const c = s.client(fast);
      const seen = watch(c);
      const pending = c.service("web@1.0.0");
      pending.catch(() => {});
      await next(c, "disconnect", 5000);
      await until(() => seen.disconnects.length >= 3, "two more attempts");
      assert.equal(seen.connects, 0);
      assert.deepEqual(s.server.query(), []);
    },
  );

  test(
    name("a TLS client refuses a certificate made for another address"),
    { skip },
    async () => {
      await using s = await serve(t, { tls: otherPem });
      const c = s.client({ tls: { caCerts: [otherPem.cert] }, ...fast });
      const seen = watch(c);
      const pending = c.service("web@1.0.0");
      pending.catch(() => {});
      const [err] = await next(c, "disconnect", 5000);
      assert.ok(err instanceof ConnectionError, String(err));
      assert.match((err as Error).message, /127\.0\.0\.1/);
      assert.match((err as Error).message, /not valid for|does not match/);
      assert.equal(seen.connects, 0);
      assert.deepEqual(s.server.query(), []);
    },
  );

  test(
    name("a TLS client without the CA refuses a self-signed server"),
    { skip },
    async () => {
      await using s = await serve(t, { tls: pem });
      const c = s.client({ tls: true, ...fast }); // the system's roots
      const seen = watch(c);
      const pending = c.service("web@1.0.0");
      pending.catch(() => {});
      const [err] = await next(c, "disconnect", 5000);
      assert.ok(err instanceof ConnectionError, String(err));
      assert.match(
        (err as Error).message,
        /certificate|UnknownIssuer/i,
        "the reason names the certificate",
      );
      assert.ok((err as Error).cause !== undefined, "the cause is kept");
      await until(() => seen.disconnects.length >= 3, "two more attempts");
      assert.equal(seen.connects, 0);
      assert.deepEqual(s.server.query(), []);
    },
  );
}

for (const t of transports()) suite(t);
