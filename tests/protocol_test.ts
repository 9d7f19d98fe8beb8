import { test } from "node:test";
import assert from "node:assert/strict";
import {
  encode,
  isInvalid,
  LINE_TOO_LONG,
  LineDecoderStream,
  LineSplitter,
  parseRequest,
  parseServerMessage,
} from "../protocol.ts";

const enc = new TextEncoder();

function split(chunks: Uint8Array[], max = 64): (string | symbol)[] {
  const s = new LineSplitter(max);
  const out: (string | symbol)[] = [];
  for (const c of chunks) s.push(c, (l) => out.push(l));
  return out;
}

const SAMPLE = '{"a":1}\n{"b":"é"}\r\n\n{"c":[1,2,3]}\n';
const EXPECTED = ['{"a":1}', '{"b":"é"}', '{"c":[1,2,3]}'];

test("LineSplitter gives the same lines fed byte by byte", () => {
  const bytes = enc.encode(SAMPLE);
  const chunks = [...bytes].map((b) => Uint8Array.of(b));
  assert.deepEqual(split(chunks), EXPECTED);
  assert.deepEqual(split([bytes]), EXPECTED);
});

test("LineSplitter gives the same lines for random splits", () => {
  const bytes = enc.encode(SAMPLE.repeat(20));
  const want = Array.from({ length: 20 }, () => EXPECTED).flat();
  let seed = 42;
  const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  for (let round = 0; round < 200; round++) {
    const chunks: Uint8Array[] = [];
    let i = 0;
    while (i < bytes.length) {
      const n = 1 + Math.floor(rand() * 17);
      chunks.push(bytes.subarray(i, i + n));
      i += n;
    }
    assert.deepEqual(split(chunks), want, `round ${round}`);
  }
});

test("LineSplitter decodes invalid UTF-8 and a BOM line by line, whatever the chunking", () => {
  // A lone invalid byte, a cut sequence, a BOM at the start of a line (each
  // line is decoded alone, so each line's BOM is dropped), and ASCII lines.
  const bytes = Uint8Array.of(
    ...enc.encode('{"a":1}\n'),
    0xff,
    ...enc.encode("x\n"),
    0xe2,
    0x82,
    ...enc.encode("y\r\n"),
    0xef,
    0xbb,
    0xbf,
    ...enc.encode('{"b":2}\n'),
  );
  const want = ['{"a":1}', "\ufffdx", "\ufffdy", '{"b":2}'];
  assert.deepEqual(split([bytes]), want);
  for (let at = 1; at < bytes.length; at++) {
    assert.deepEqual(
      split([bytes.subarray(0, at), bytes.subarray(at)]),
      want,
      `split at ${at}`,
    );
  }
});

test("an over-long line is reported once and the stream stays usable", () => {
  const long = "x".repeat(100);
  for (const chunk of [1, 7, 1000]) {
    const bytes = enc.encode(`{"a":1}\n${long}\n{"b":2}\n`);
    const chunks: Uint8Array[] = [];
    for (let i = 0; i < bytes.length; i += chunk) {
      chunks.push(bytes.subarray(i, i + chunk));
    }
    assert.deepEqual(split(chunks, 64), ['{"a":1}', LINE_TOO_LONG, '{"b":2}']);
  }
});

test("a line of exactly the limit is accepted", () => {
  const line = "y".repeat(64);
  assert.deepEqual(split([enc.encode(line + "\n")], 64), [line]);
  assert.deepEqual(split([enc.encode(line + "\r\n")], 64), [line]);
});

test("LineDecoderStream splits a Web Stream into lines", async () => {
  const bytes = enc.encode(SAMPLE);
  const source = new ReadableStream<Uint8Array>({
    start(c) {
      for (let i = 0; i < bytes.length; i += 3) {
        c.enqueue(bytes.slice(i, i + 3));
      }
      c.close();
    },
  });
  const lines: (string | symbol)[] = [];
  for await (const l of source.pipeThrough(new LineDecoderStream())) {
    lines.push(l);
  }
  assert.deepEqual(lines, EXPECTED);
});

test("parseRequest accepts every operation with valid fields", () => {
  const ok = [
    { id: 0, op: "hello", v: 1, env: "prod", advertise: "10.1.2.3" },
    { id: 0, op: "hello", v: 1, session: "0123456789abcdef0123456789abcdef" },
    { id: 1, op: "auth", mac: "ab" },
    {
      id: 2,
      op: "allocate",
      role: "web@1.2.3",
      meta: { a: [1] },
      exclude: [5],
    },
    { id: 3, op: "ready", rid: "x-1" },
    { id: 31, op: "allocate", role: "web", port: 7, ready: true },
    { id: 4, op: "assume", role: "web", port: 8080 },
    { id: 5, op: "free", rid: "x-1" },
    { id: 6, op: "free", port: 8080 },
    { id: 7, op: "query" },
    { id: 8, op: "query", pattern: "web@1.x", env: "a", all: true },
    { id: 9, op: "get", pattern: "web" },
    { id: 10, op: "cancel", target: 9 },
    { id: 11, op: "subscribe" },
    { id: 12, op: "unsubscribe" },
    { id: 13, op: "ping" },
  ];
  for (const msg of ok) {
    const r = parseRequest(JSON.stringify(msg));
    assert.ok(!isInvalid(r), JSON.stringify(r));
    assert.deepEqual(r, msg);
  }
});

test("parseRequest names what is wrong", () => {
  const cases: [string, string | null, string, RegExp][] = [
    ["{nope", null, "PROTOCOL", /Malformed JSON/],
    ["[1,2]", null, "BAD_REQUEST", /must be a JSON object/],
    ['{"op":"ping"}', null, "BAD_REQUEST", /"id"/],
    ['{"id":-1,"op":"ping"}', null, "BAD_REQUEST", /"id"/],
    ['{"id":1e300,"op":"ping"}', null, "BAD_REQUEST", /"id"/],
    [
      '{"id":1,"op":"explode"}',
      "1",
      "BAD_REQUEST",
      /unknown operation "explode"/,
    ],
    ['{"id":1,"op":7}', "1", "BAD_REQUEST", /"op" must be a string/],
    [
      '{"id":1,"op":"assume","role":"web","port":"80"}',
      "1",
      "BAD_REQUEST",
      /"port"/,
    ],
    [
      '{"id":1,"op":"assume","role":"web","port":70000}',
      "1",
      "BAD_REQUEST",
      /"port"/,
    ],
    [
      '{"id":1,"op":"allocate","role":5}',
      "1",
      "BAD_REQUEST",
      /"role" must be a string/,
    ],
    [
      '{"id":1,"op":"allocate","role":"w","meta":[]}',
      "1",
      "BAD_REQUEST",
      /"meta" must be an object/,
    ],
    [
      '{"id":1,"op":"allocate","role":"w","meta":{"__proto__":{"x":1}}}',
      "1",
      "BAD_REQUEST",
      /forbidden key "__proto__"/,
    ],
    [
      '{"id":1,"op":"allocate","role":"w","meta":{"a":{"constructor":1}}}',
      "1",
      "BAD_REQUEST",
      /forbidden key "constructor"/,
    ],
    ['{"id":1,"op":"free"}', "1", "BAD_REQUEST", /needs "rid" or "port"/],
    [
      '{"id":1,"op":"hello","v":"1"}',
      "1",
      "BAD_REQUEST",
      /"v" must be an integer/,
    ],
    [
      '{"id":1,"op":"hello","v":1,"advertise":"a b"}',
      "1",
      "BAD_REQUEST",
      /"advertise"/,
    ],
    [
      '{"id":1,"op":"hello","v":1,"session":""}',
      "1",
      "BAD_REQUEST",
      /"session" must be 1 to 128 visible ASCII characters/,
    ],
    [
      '{"id":1,"op":"hello","v":1,"session":"a b"}',
      "1",
      "BAD_REQUEST",
      /"session" must be 1 to 128 visible ASCII characters/,
    ],
    [
      `{"id":1,"op":"hello","v":1,"session":"${"a".repeat(129)}"}`,
      "1",
      "BAD_REQUEST",
      /"session" is longer than 128 characters/,
    ],
    [
      '{"id":1,"op":"hello","v":1,"session":7}',
      "1",
      "BAD_REQUEST",
      /"session" must be a string/,
    ],
    [
      '{"id":1,"op":"query","all":"yes"}',
      "1",
      "BAD_REQUEST",
      /"all" must be a boolean/,
    ],
  ];
  for (const [line, id, code, message] of cases) {
    const r = parseRequest(line);
    assert.ok(isInvalid(r), line);
    assert.equal(r.id === null ? null : String(r.id), id, line);
    assert.equal(r.error.code, code, line);
    assert.match(r.error.message, message, line);
  }
});

test("deeply nested metadata is refused", () => {
  let meta: unknown = 1;
  for (let i = 0; i < 20; i++) meta = { a: meta };
  const r = parseRequest(
    JSON.stringify({ id: 1, op: "allocate", role: "w", meta }),
  );
  assert.ok(isInvalid(r));
  assert.match(r.error.message, /nested deeper/);
});

test("server messages round-trip through encode and parseServerMessage", () => {
  const record = {
    host: "h",
    port: 1,
    role: "r",
    version: "1.0.0",
    env: "",
    id: "i",
  };
  const msgs = [
    { id: 1, result: [record] },
    { id: null, error: { code: "PROTOCOL", message: "m" } },
    { ev: "free" as const, record },
  ];
  for (const m of msgs) {
    const line = encode(m);
    assert.ok(line.endsWith("\n"));
    assert.deepEqual(parseServerMessage(line.trimEnd()), m);
  }
  assert.equal(parseServerMessage("nope"), undefined);
  assert.equal(parseServerMessage('{"ev":"boom","record":{}}'), undefined);
});
