/**
 * Property-based tests (fast-check) of the decoder and of request validation,
 * and a live server fed random lines. A failure prints the seed and the
 * shrunk counterexample; replay it with `fc.assert(…, { seed, path })`.
 *
 * @module
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  isInvalid,
  LINE_TOO_LONG,
  LineSplitter,
  OPERATIONS,
  parseRequest,
} from "../protocol.ts";
import type { Transport } from "../transport.ts";
import { serve, transports, within } from "./_helpers.ts";
import { greeted } from "./_raw.ts";

const FORBIDDEN = ["__proto__", "constructor", "prototype"];

const enc = new TextEncoder();
type Out = string | typeof LINE_TOO_LONG;

// ---- the line decoder ----

/** A line: its text (no "\n") and whether it ends with "\r\n". */
const lineArb = fc.record({
  text: fc.string({
    unit: fc.constantFrom("a", "z", " ", "\r", "é", "€", "😀", "{", '"'),
    maxLength: 24,
  }),
  crlf: fc.boolean(),
});

/** What the splitter must yield for `lines`, by PROTOCOL.md's rules. */
function expected(
  lines: readonly { text: string; crlf: boolean }[],
  max: number,
): Out[] {
  const out: Out[] = [];
  for (const { text, crlf } of lines) {
    // one "\r" before the "\n" is dropped; it does not count
    const line = crlf ? text : text.replace(/\r$/, "");
    if (enc.encode(line).length > max) out.push(LINE_TOO_LONG);
    else if (line !== "") out.push(line);
  }
  return out;
}

/** The stream's bytes, and where to cut it into chunks. */
function stream(
  lines: readonly { text: string; crlf: boolean }[],
  cuts: readonly number[],
): Uint8Array[] {
  const bytes = enc.encode(
    lines.map((l) => l.text + (l.crlf ? "\r\n" : "\n")).join(""),
  );
  const at = [...new Set(cuts.map((c) => c % (bytes.length + 1)))]
    .sort((a, b) => a - b);
  const chunks: Uint8Array[] = [];
  let from = 0;
  for (const to of [...at, bytes.length]) {
    chunks.push(bytes.slice(from, to));
    from = to;
  }
  return chunks;
}

test("LineSplitter yields the same lines for any chunking", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 32 }),
      fc.array(lineArb, { maxLength: 12 }),
      fc.array(fc.nat(), { maxLength: 40 }),
      (max, lines, cuts) => {
        const splitter = new LineSplitter(max);
        const out: Out[] = [];
        for (const chunk of stream(lines, cuts)) {
          splitter.push(chunk, (l) => out.push(l));
        }
        assert.deepEqual(out, expected(lines, max));
      },
    ),
    { numRuns: 2000 },
  );
});

test("LineSplitter yields the same lines fed byte by byte", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 32 }),
      fc.array(lineArb, { maxLength: 12 }),
      (max, lines) => {
        const splitter = new LineSplitter(max);
        const out: Out[] = [];
        const [bytes = new Uint8Array()] = stream(lines, []);
        for (let i = 0; i < bytes.length; i++) {
          splitter.push(bytes.subarray(i, i + 1), (l) => out.push(l));
        }
        assert.deepEqual(out, expected(lines, max));
      },
    ),
    { numRuns: 1000 },
  );
});

test("LineSplitter keeps no reference to a chunk after push() returns", () => {
  // A reader that reuses its buffer (conn.read(buf), a BYOB reader) must be
  // able to overwrite a chunk once push() has returned. A splitter that keeps
  // views of the chunks also keeps their whole ArrayBuffers alive.
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 32 }),
      fc.array(lineArb, { maxLength: 12 }),
      fc.array(fc.nat(), { maxLength: 40 }),
      (max, lines, cuts) => {
        const splitter = new LineSplitter(max);
        const out: Out[] = [];
        const buffer = new Uint8Array(256);
        for (const chunk of stream(lines, cuts)) {
          buffer.set(chunk);
          splitter.push(buffer.subarray(0, chunk.length), (l) => out.push(l));
          buffer.fill(0x21); // "!": reused for the next read
        }
        assert.deepEqual(out, expected(lines, max));
      },
    ),
    { numRuns: 1000 },
  );
});

// ---- request validation ----

const CODES = new Set(["PROTOCOL", "BAD_REQUEST"]);
const OP_SET: ReadonlySet<string> = new Set(OPERATIONS);

/** Checks the contract of parseRequest for one line. */
function checkParsed(line: string): void {
  const r = parseRequest(line);
  if (isInvalid(r)) {
    assert.ok(CODES.has(r.error.code), `code ${r.error.code}`);
    assert.equal(typeof r.error.message, "string");
    assert.ok(r.error.message.length > 0);
    assert.ok(r.id === null || Number.isSafeInteger(r.id));
    return;
  }
  assert.ok(OP_SET.has(r.op), `op ${r.op}`);
  assert.ok(Number.isSafeInteger(r.id) && r.id >= 0, `id ${r.id}`);
  if ("meta" in r && r.meta !== undefined) noForbiddenKeys(r.meta, 0);
}

function noForbiddenKeys(v: unknown, depth: number): void {
  assert.ok(depth <= 9, "meta nested deeper than the limit");
  if (Array.isArray(v)) {
    for (const x of v) noForbiddenKeys(x, depth + 1);
  } else if (typeof v === "object" && v !== null) {
    for (const [k, x] of Object.entries(v)) {
      assert.ok(!FORBIDDEN.includes(k), `meta has "${k}"`);
      noForbiddenKeys(x, depth + 1);
    }
  }
}

/** Values of the kinds the fields take, and of every other kind. */
const fieldValue = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }),
  fc.integer({ min: -2, max: 70000 }),
  fc.constantFrom(0, 1, 65535, 65536, -0, 1.5, 1e400, 2 ** 53, NaN),
  fc.string({ unit: "binary", maxLength: 40 }),
  fc.string({ maxLength: 1100 }),
  fc.array(fc.integer({ min: -1, max: 70000 }), { maxLength: 5 }),
  fc.dictionary(
    fc.oneof(fc.string({ maxLength: 6 }), fc.constantFrom(...FORBIDDEN)),
    fc.jsonValue({ maxDepth: 12 }),
    { maxKeys: 4 },
  ),
);

/** Objects shaped like requests: a known or random op, random fields. */
const requestish = fc.record({
  id: fc.oneof(fc.nat(), fieldValue),
  op: fc.oneof(fc.constantFrom(...OPERATIONS), fc.string({ maxLength: 12 })),
  v: fieldValue,
  env: fieldValue,
  advertise: fieldValue,
  mac: fieldValue,
  role: fieldValue,
  meta: fieldValue,
  port: fieldValue,
  exclude: fieldValue,
  rid: fieldValue,
  pattern: fieldValue,
  all: fieldValue,
  target: fieldValue,
}, { requiredKeys: [] });

test("parseRequest never throws, whatever the line", () => {
  fc.assert(
    fc.property(
      fc.oneof(
        fc.string({ unit: "binary", maxLength: 200 }),
        fc.json({ maxDepth: 12 }),
        fc.jsonValue().map((v) => JSON.stringify(v)),
        requestish.map((o) => JSON.stringify(o)),
      ),
      (line) => checkParsed(line),
    ),
    { numRuns: 5000 },
  );
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
});

const id = fc.maxSafeNat();
const port = fc.integer({ min: 1, max: 65535 });
const text = (max: number) => fc.string({ unit: "binary", maxLength: max });
/** Whether a JSON value has a forbidden key at any depth. */
function hasForbidden(v: unknown): boolean {
  if (Array.isArray(v)) return v.some(hasForbidden);
  if (typeof v !== "object" || v === null) return false;
  return Object.entries(v).some(([k, x]) =>
    FORBIDDEN.includes(k) || hasForbidden(x)
  );
}
const meta = fc.dictionary(
  fc.string({ maxLength: 8 }),
  fc.jsonValue({ maxDepth: 5 }),
  { maxKeys: 5 },
).filter((m) => !hasForbidden(m));
// deno-lint-ignore no-control-regex
const hostChars = /^[^\s\u0000-\u001f]+$/;

/** Requests that are valid, in the exact shape parseRequest returns. */
const validRequest = fc.oneof(
  fc.record({
    id,
    op: fc.constant("hello"),
    v: fc.integer(),
    env: text(64),
    advertise: text(64).filter((s) => hostChars.test(s)),
  }, { requiredKeys: ["id", "op", "v"] }),
  fc.record({ id, op: fc.constant("auth"), mac: text(64) }),
  fc.record({
    id,
    op: fc.constant("allocate"),
    role: text(64),
    meta,
    port,
    exclude: fc.array(port, { maxLength: 20 }),
  }, { requiredKeys: ["id", "op", "role"] }),
  fc.record({ id, op: fc.constant("ready"), rid: text(64) }),
  fc.record({ id, op: fc.constant("assume"), role: text(64), port, meta }, {
    requiredKeys: ["id", "op", "role", "port"],
  }),
  fc.record({ id, op: fc.constant("free"), rid: text(64) }),
  fc.record({ id, op: fc.constant("free"), port }),
  fc.record({
    id,
    op: fc.constant("query"),
    pattern: text(64),
    env: text(64),
    all: fc.boolean(),
  }, { requiredKeys: ["id", "op"] }),
  fc.record({ id, op: fc.constant("get"), pattern: text(64), env: text(64) }, {
    requiredKeys: ["id", "op", "pattern"],
  }),
  fc.record({ id, op: fc.constant("cancel"), target: fc.maxSafeNat() }),
  fc.record({
    id,
    op: fc.constantFrom("subscribe", "unsubscribe", "ping"),
  }),
);

test("a valid request round-trips through JSON and parseRequest", () => {
  fc.assert(
    fc.property(validRequest, (request) => {
      const line = JSON.stringify(request);
      const parsed = parseRequest(line);
      assert.ok(!isInvalid(parsed), `${line}: ${JSON.stringify(parsed)}`);
      assert.deepEqual(parsed, JSON.parse(line));
    }),
    { numRuns: 3000 },
  );
});

// ---- a live server ----

/** Lines a hostile or broken client might send, valid ones among them. */
const randomLine = fc.oneof(
  fc.string({ unit: "binary", maxLength: 80 }),
  fc.json({ maxDepth: 4 }),
  requestish.map((o) => JSON.stringify(o)),
  validRequest.map((o) => JSON.stringify(o)),
  fc.string({ unit: "grapheme-ascii", minLength: 300, maxLength: 600 }),
).map((line) => line.replaceAll("\n", " "));

function suite(t: Transport): void {
  const name = (s: string) => `[${t.name}] ${s}`;

  test(
    name("a server fed random lines keeps answering and keeps others' state"),
    async () => {
      await using s = await serve(t, { maxLineBytes: 512 });
      const keeper = s.client({ advertise: "10.9.9.9" });
      const kept = await keeper.service("keep@1.2.3", { zone: "a" });
      const before = s.server.query("keep");
      const errors: unknown[] = [];
      s.server.on("error", (e) => errors.push(e));
      const PING = 2 ** 52; // no random line uses this id
      let sent = 0;
      await fc.assert(
        fc.asyncProperty(
          fc.array(randomLine, { minLength: 1, maxLength: 30 }),
          async (lines) => {
            await using r = await greeted(t, s.port);
            for (const line of lines) await r.send(line + "\n");
            sent += lines.length;
            await r.json({ id: PING, op: "ping" });
            let reply: Record<string, unknown>;
            do reply = await r.next(5000); while (reply.id !== PING);
            assert.deepEqual(reply, { id: PING, result: {} });
          },
        ),
        { numRuns: 10 },
      );
      assert.ok(sent <= 300);
      assert.deepEqual(s.server.query("keep"), before);
      assert.deepEqual(
        (await keeper.query("keep")).map((x) => x.port),
        [kept],
      );
      assert.deepEqual(errors, [], "no internal error reached the server");
      await within(keeper.query(), 2000, "the keeper's own round trip");
    },
  );
}

for (const t of transports()) suite(t);
