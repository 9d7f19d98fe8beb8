import { test } from "node:test";
import assert from "node:assert/strict";
import { RegistryError } from "../errors.ts";
import { hostPort, parsePattern, parseRole, Registry } from "../registry.ts";

const input = (role: string, host = "10.0.0.1", env = "") => ({
  env,
  role,
  host,
});

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof RegistryError, `not a RegistryError: ${err}`);
    return err.code;
  }
  return undefined;
}

test("parseRole splits name and version, defaulting to 0.0.0", () => {
  assert.deepEqual(parseRole("web@1.2.3"), { name: "web", version: "1.2.3" });
  assert.deepEqual(parseRole("http server"), {
    name: "http server",
    version: "0.0.0",
  });
  assert.deepEqual(parseRole("db@v2.0.0-rc.1"), {
    name: "db",
    version: "2.0.0-rc.1",
  });
});

test("parseRole rejects bad names and versions with INVALID_ROLE", () => {
  for (
    const bad of ["", "@1.2.3", "web@", "web@1.2", "web@x", " web", "a\nb"]
  ) {
    assert.equal(codeOf(() => parseRole(bad)), "INVALID_ROLE", bad);
  }
  assert.throws(() => parseRole("web@banana"), /"banana" is not a semver/);
});

test("parsePattern accepts all of semver's range syntax", () => {
  for (
    const ok of [
      "web",
      "web@1.2.x",
      "web@^1.2",
      "web@>=1.2",
      "web@~1",
      "web@1.2.3 || 2.x",
      "web@*",
    ]
  ) {
    assert.equal(parsePattern(ok).name, "web", ok);
  }
  assert.equal(parsePattern("web@*").range, null);
});

test("parsePattern rejects an invalid range with INVALID_PATTERN", () => {
  assert.equal(codeOf(() => parsePattern("web@>=banana")), "INVALID_PATTERN");
  assert.equal(codeOf(() => parsePattern("@1.x")), "INVALID_PATTERN");
});

test("the seed's version example matches as semver says", () => {
  const r = new Registry<string>();
  for (const role of ["beep@1.2.3", "beep@1.3.5", "beep@0.9.2"]) {
    r.assume("o", input(role), r.size + 7000);
  }
  const versions = (p: string) => r.query("", p).map((x) => x.version).sort();
  assert.deepEqual(versions("beep"), ["0.9.2", "1.2.3", "1.3.5"]);
  assert.deepEqual(versions("beep@1.2.x"), ["1.2.3"]);
  assert.deepEqual(versions("beep@>=1.2"), ["1.2.3", "1.3.5"]);
  assert.deepEqual(versions("boop"), []);
});

test("allocate hands out ports from the range in order", () => {
  const r = new Registry<string>({ range: { "*": [5000, 5002] } });
  const ports = [1, 2, 3].map(
    () => r.allocate("o", input("web@1.0.0")).port,
  );
  assert.deepEqual(ports, [5000, 5001, 5002]);
});

test("peek proposes distinct free ports that allocate can take by number", () => {
  const r = new Registry<string>({ range: { "*": [5000, 5003] } });
  r.allocate("o", input("web@1.0.0")); // 5000
  assert.equal(r.peek("10.0.0.1"), 5001);
  assert.equal(r.peek("10.0.0.1"), 5002, "a second peek proposes another");
  // the pick moved past both proposals
  assert.equal(r.allocate("p", input("db@1.0.0")).port, 5003);
  assert.equal(r.allocate("o", input("web@1.0.1"), { port: 5001 }).port, 5001);
  assert.equal(r.peek("10.0.0.1"), 5002, "wrapped around to the free one");
  r.allocate("o", input("web@1.0.2"), { port: 5002 });
  assert.equal(r.peek("10.0.0.1"), undefined, "full");
  assert.equal(r.size, 4, "peek reserves nothing");
  assert.equal(r.peek("10.0.0.9"), 5000, "another host has its own table");
});

test("answers are shared until the role changes, then recomputed", () => {
  const r = new Registry<string>();
  const a = r.assume("o", input("web@1.2.3"), 9000).record!;
  const first = r.query("", "web@1.x");
  assert.equal(r.query("", "web@^1.0.0"), first, "same range, same answer");
  assert.ok(Object.isFrozen(first));
  r.assume("o", input("other@1.0.0"), 9001); // another role: unchanged
  assert.equal(r.query("", "web@1.x"), first);
  const b = r.assume("o", input("web@1.4.0"), 9002).record!;
  assert.deepEqual(r.query("", "web@1.x"), [a, b]);
  r.free("o", { id: a.id });
  assert.deepEqual(r.query("", "web@1.x"), [b]);
  assert.deepEqual(first, [a], "an answer given out never changes");
});

test("an allocation is invisible until ready, which fires allocate", () => {
  const r = new Registry<string>();
  const rec = r.allocate("o", input("web@1.0.0"));
  assert.deepEqual(r.query("", "web"), []);
  const change = r.ready("o", rec.id);
  assert.deepEqual(change.events, [{ type: "allocate", record: rec }]);
  assert.deepEqual(r.query("", "web"), [rec]);
  assert.deepEqual(r.ready("o", rec.id).events, [], "ready twice is a no-op");
});

test("a port is never given to two registrations on one host", () => {
  const r = new Registry<string>({ range: { "*": [6000, 6499] } });
  const seen = new Set<number>();
  for (let i = 0; i < 500; i++) {
    const owner = i % 2 === 0 ? "a" : "b";
    const rec = r.allocate(owner, input(`svc${i % 7}@1.0.${i}`));
    assert.ok(!seen.has(rec.port), `port ${rec.port} given twice`);
    seen.add(rec.port);
  }
  assert.equal(seen.size, 500);
  // another host has its own table
  assert.equal(r.allocate("a", input("web", "10.0.0.2")).port, 6000);
});

test("ranges are configured per host with * as the default", () => {
  const r = new Registry<string>({
    range: { "*": [10000, 20000], "10.0.0.5": [30000, 30100] },
  });
  assert.equal(r.allocate("o", input("web", "10.0.0.5")).port, 30000);
  assert.equal(r.allocate("o", input("web", "10.0.0.6")).port, 10000);
});

test("an exhausted range rejects with RANGE_EXHAUSTED, and frees recover", () => {
  const r = new Registry<string>({ range: { "*": [7000, 7001] } });
  const a = r.allocate("o", input("web"));
  r.allocate("o", input("web"));
  assert.throws(
    () => r.allocate("o", input("web@1.2.3")),
    (err: unknown) =>
      err instanceof RegistryError && err.code === "RANGE_EXHAUSTED" &&
      err.message ===
        'Cannot allocate a port for "web@1.2.3": range 7000-7001 on 10.0.0.1 is exhausted',
  );
  r.free("o", { id: a.id });
  assert.equal(r.allocate("o", input("web")).port, a.port);
});

test("allocate skips excluded ports and reports exhaustion when all are", () => {
  const r = new Registry<string>({ range: { "*": [7000, 7002] } });
  assert.equal(
    r.allocate("o", input("web"), { exclude: [7000, 7001] }).port,
    7002,
  );
  assert.equal(
    codeOf(() => r.allocate("o", input("web"), { exclude: [7000, 7001] })),
    "RANGE_EXHAUSTED",
  );
});

test("allocate of a specific port fails with PORT_TAKEN when held", () => {
  const r = new Registry<string>();
  r.assume("a", input("web"), 8080);
  assert.equal(
    codeOf(() => r.allocate("b", input("web"), { port: 8080 })),
    "PORT_TAKEN",
  );
  assert.equal(r.allocate("b", input("web"), { port: 8081 }).port, 8081);
});

test("assume replaces the holder of the port, firing free then assume", () => {
  const r = new Registry<string>();
  const old = r.assume("a", input("web@1.0.0"), 9000).record!;
  const change = r.assume("b", input("web@2.0.0"), 9000);
  assert.deepEqual(change.events.map((e) => e.type), ["free", "assume"]);
  assert.equal(change.events[0]!.record, old);
  assert.deepEqual(r.query("", "web").map((x) => x.version), ["2.0.0"]);
  assert.equal(r.countOf("a"), 0);
});

test("free by id or by port only touches the owner's registrations", () => {
  const r = new Registry<string>();
  const a = r.assume("a", input("web"), 9000).record!;
  r.assume("a", input("db"), 9001);
  assert.equal(codeOf(() => r.free("b", { id: a.id })), "NOT_FOUND");
  assert.deepEqual(r.free("a", { id: a.id }).events, [
    { type: "free", record: a },
  ]);
  assert.equal(
    r.free("a", { host: "10.0.0.1", port: 9001 }).events[0]!.record.role,
    "db",
  );
  assert.equal(r.size, 0);
  assert.equal(codeOf(() => r.free("a", { id: a.id })), "NOT_FOUND");
});

test("dropOwner frees everything the owner holds and only that", () => {
  const r = new Registry<string>();
  r.assume("a", input("web"), 9000);
  r.assume("a", input("db"), 9001);
  const reserved = r.allocate("a", input("cache"));
  r.assume("b", input("web"), 9002);
  const change = r.dropOwner("a");
  assert.deepEqual(change.events.map((e) => e.record.port).sort(), [
    9000,
    9001,
  ]);
  assert.equal(r.size, 1);
  assert.equal(codeOf(() => r.ready("a", reserved.id)), "NOT_FOUND");
});

test("wait answers at once when something matches", () => {
  const r = new Registry<string, number>();
  const rec = r.assume("a", input("web@1.2.3"), 9000).record!;
  assert.deepEqual(r.wait("b", "", "web@1.x", 1), [rec]);
  assert.equal(r.waitingOf("b"), 0);
});

test("a waiting get is woken by the first matching registration only", () => {
  const r = new Registry<string, number>();
  assert.equal(r.wait("w", "", "web@1.2.x", 1), undefined);
  assert.equal(r.wait("w", "", "web@2", 2), undefined);
  assert.deepEqual(r.assume("a", input("web@1.3.0"), 9000).woken, []);
  const rec = r.allocate("a", input("web@1.2.9"));
  const change = r.ready("a", rec.id);
  assert.deepEqual(change.woken, [{ token: 1, records: [rec] }]);
  assert.equal(r.waitingOf("w"), 1);
  assert.equal(r.cancelWait("w", 2), true);
  assert.equal(r.cancelWait("w", 2), false);
  assert.equal(r.waitingOf("w"), 0);
});

test("environments partition registrations and waiting gets", () => {
  const r = new Registry<string, number>();
  assert.equal(r.wait("w", "prod", "web", 1), undefined);
  const change = r.assume("a", input("web", "h", "staging"), 9000);
  assert.deepEqual(change.woken, []);
  assert.equal(r.query("prod", "web").length, 0);
  assert.equal(r.query("staging", "web").length, 1);
  assert.equal(r.query(undefined, "web").length, 1, "all environments");
  assert.equal(r.assume("a", input("web", "h", "prod"), 9001).woken.length, 1);
});

test("metadata rides along but cannot override reserved keys", () => {
  const r = new Registry<string>();
  const rec = r.assume("a", {
    ...input("web@1.0.0"),
    meta: { host: "evil", port: 1, id: "x", region: "eu", tags: ["a"] },
  }, 9000).record!;
  assert.deepEqual(
    { ...rec, id: "ID" },
    {
      host: "10.0.0.1",
      port: 9000,
      role: "web",
      version: "1.0.0",
      env: "",
      id: "ID",
      region: "eu",
      tags: ["a"],
    },
  );
});

test("an invalid range option is a RangeError", () => {
  assert.throws(() => new Registry({ range: { "*": [20, 10] } }), RangeError);
  assert.throws(() => new Registry({ range: { "*": [0, 10] } }), RangeError);
});

test("unready hides a registration and keeps its port; ready shows it again", () => {
  const reg = new Registry<string>({ range: { "*": [5000, 5001] } });
  const r = reg.allocate("a", input("web@1.0.0"));
  assert.equal(reg.ready("a", r.id).events[0]?.type, "allocate");
  const down = reg.unready("a", r.id);
  assert.deepEqual(down.events, [{ type: "free", record: r, unready: true }]);
  assert.deepEqual(reg.query("", "web"), []);
  assert.equal(reg.isReady("a", r.id), false);
  assert.equal(reg.unready("a", r.id).events.length, 0, "twice is once");
  // the port stays reserved: the next allocation takes the other one
  const other = reg.allocate("b", input("db"));
  assert.notEqual(other.port, r.port);
  assert.equal(codeOf(() => reg.allocate("b", input("db"))), "RANGE_EXHAUSTED");
  assert.equal(
    codeOf(() => reg.allocate("b", input("db"), { port: r.port })),
    "PORT_TAKEN",
  );
  // a waiting get is woken when it is ready again
  assert.equal(reg.wait("c", "", "web", "t1"), undefined);
  const up = reg.ready("a", r.id);
  assert.deepEqual(up.events, [{ type: "allocate", record: r }]);
  assert.deepEqual(up.woken, [{ token: "t1", records: [r] }]);
  assert.deepEqual(reg.query("", "web"), [r]);
  // freeing a not-ready registration says the port went too
  reg.unready("a", r.id);
  assert.deepEqual(reg.free("a", { id: r.id }).events, [
    { type: "free", record: r },
  ]);
  assert.equal(reg.size, 1);
});

test("an assumed port goes not ready and comes back as assume", () => {
  const reg = new Registry<string>();
  const r = reg.assume("a", input("redis@7.0.0"), 6379).record!;
  reg.unready("a", r.id);
  assert.deepEqual(reg.ready("a", r.id).events, [{
    type: "assume",
    record: r,
  }]);
  const hidden = reg.assume("b", input("mq"), 5672, { ready: false });
  assert.deepEqual(hidden.events, []);
  assert.deepEqual(reg.query("", "mq"), []);
  assert.equal(reg.ready("b", hidden.record!.id).events[0]?.type, "assume");
});

test("unready and ready of another owner's registration are NOT_FOUND", () => {
  const reg = new Registry<string>();
  const r = reg.allocate("a", input("web"));
  assert.equal(codeOf(() => reg.unready("b", r.id)), "NOT_FOUND");
  assert.equal(codeOf(() => reg.ready("b", r.id)), "NOT_FOUND");
});

test("evict frees whatever holds a port on a host, whoever holds it", () => {
  const reg = new Registry<string>();
  const r = reg.assume("a", input("web"), 8080).record!;
  const change = reg.evict("10.0.0.1", 8080);
  assert.deepEqual(change.events, [{ type: "free", record: r }]);
  assert.equal(reg.countOf("a"), 0);
  assert.equal(codeOf(() => reg.evict("10.0.0.1", 8080)), "NOT_FOUND");
});

test("since is when a registration was last made visible, by the given clock", () => {
  let now = 1_000_000;
  const reg = new Registry<string>({ now: () => now });
  const r = reg.allocate("a", input("web"));
  assert.equal(reg.since(r), undefined, "not visible yet");
  now += 5000;
  reg.ready("a", r.id);
  assert.equal(reg.since(r), 1_005_000);
  reg.unready("a", r.id);
  now += 3000;
  reg.ready("a", r.id);
  assert.equal(reg.since(r), 1_008_000);
  assert.equal(reg.since({ ...r }), undefined, "a copy is not its record");
});

test("hostPort brackets IPv6 hosts", () => {
  assert.equal(hostPort({ host: "10.0.0.5", port: 80 }), "10.0.0.5:80");
  assert.equal(hostPort({ host: "::1", port: 80 }), "[::1]:80");
  assert.equal(hostPort({ host: "web.local", port: 1 }), "web.local:1");
});

test("hold keeps a registration made elsewhere under its own id, replacing the port's holder", () => {
  const r = new Registry<string, string>();
  assert.equal(r.wait("w", "", "web", "get-1"), undefined);
  const local = r.allocate("o", input("db@1.0.0"), { port: 5000 });
  const held = r.hold("remote", input("web@1.2.3"), "x-1", 5000, {
    ready: true,
    kind: "allocate",
  });
  assert.equal(held.record?.id, "x-1");
  assert.deepEqual(held.events.map((e) => [e.type, e.record.id]), [
    ["allocate", "x-1"],
  ]);
  assert.equal(held.woken.length, 1, "a waiting get wakes");
  assert.equal(r.countOf("o"), 0, "the reservation it replaced is gone");
  assert.equal(r.holder("10.0.0.1", 5000)?.owner, "remote");
  assert.notEqual(r.holder("10.0.0.1", 5000)?.record, local);
  // the same registration again: only its visibility changes
  const hidden = r.hold("remote", input("web@1.2.3"), "x-1", 5000, {
    ready: false,
    kind: "allocate",
  });
  assert.deepEqual(hidden.events.map((e) => [e.type, e.unready]), [
    ["free", true],
  ]);
  assert.equal(r.query("", "web").length, 0);
  assert.equal(r.holder("10.0.0.1", 5000)?.ready, false);
  const again = r.hold("remote", input("web@1.2.3"), "x-1", 5000, {
    ready: false,
    kind: "allocate",
  });
  assert.deepEqual(again.events, [], "nothing changed, nothing fired");
  const assumed = r.hold("other", input("web@2.0.0"), "y-1", 5000, {
    ready: true,
    kind: "assume",
  });
  assert.deepEqual(assumed.events.map((e) => [e.type, e.record.id]), [
    ["free", "x-1"],
    ["assume", "y-1"],
  ]);
  assert.equal(r.size, 1);
});

test("peek skips the ports it is told to exclude", () => {
  const r = new Registry<string>({ range: { "*": [5000, 5002] } });
  assert.equal(r.peek("h", new Set([5000, 5001])), 5002);
  assert.equal(r.peek("h", new Set([5000, 5001, 5002])), undefined);
  assert.equal(r.holder("h", 5000), undefined);
});

test("start places the first pick of each host's range", () => {
  const r = new Registry<string>({ range: { "*": [5000, 5009] }, start: 0.5 });
  assert.equal(r.allocate("o", input("web")).port, 5005);
  assert.equal(r.peek("10.0.0.1"), 5006);
  assert.throws(() => new Registry({ start: 1 }), RangeError);
});

test("a proposed port is passed over by picks for proposalHold, then picked again; a taken one is no longer held", () => {
  let now = 1_000_000;
  const r = new Registry<string>({
    range: { "*": [5000, 5003] },
    now: () => now,
    proposalHold: 2000,
  });
  assert.equal(r.peek("h"), 5000);
  assert.equal(r.peek("h"), 5001);
  assert.equal(r.peek("h"), 5002);
  // the pick wraps round: 5000 to 5002 are still held for their clients
  assert.equal(r.allocate("o", input("web", "h")).port, 5003);
  now += 1000;
  assert.equal(r.peek("h"), 5000, "every free port held: the oldest proposal");
  now += 999;
  assert.equal(r.allocate("o", input("web", "h"), { port: 5001 }).port, 5001);
  now += 1;
  // 5002's hold ended; 5000 was proposed again 1 s after the others
  assert.equal(r.peek("h"), 5002);
  r.free("o", { host: "h", port: 5001 });
  assert.equal(
    r.peek("h"),
    5001,
    "taken, then freed: not held (no reuseDelay)",
  );
});

test("a freed port is passed over by picks for reuseDelay, before any proposed one is used again", () => {
  let now = 0;
  const r = new Registry<string>({
    range: { "*": [5000, 5004] },
    now: () => now,
    reuseDelay: 5000,
    proposalHold: 2000,
  });
  const a = r.allocate("o", input("web", "h"));
  const b = r.allocate("p", input("web", "h"));
  assert.deepEqual([a.port, b.port], [5000, 5001]);
  r.free("o", { id: a.id });
  r.dropOwner("p"); // a dropped connection's ports are held the same
  assert.equal(r.allocate("q", input("db", "h")).port, 5002);
  assert.equal(r.peek("h"), 5003);
  assert.equal(r.peek("h"), 5004);
  // every free port held: the one freed longest ago, not a proposed one
  assert.equal(r.peek("h"), 5000);
  assert.equal(r.peek("h"), 5001);
  assert.equal(r.peek("h"), 5003, "then the proposal held longest");
  // a client back within the delay takes its port again by number
  assert.equal(r.assume("p", input("web", "h"), 5001).record?.port, 5001);
  now += 2000; // the proposals' holds end: picks go round from where they were
  assert.equal(r.allocate("q", input("db", "h")).port, 5000);
  assert.equal(r.allocate("q", input("db", "h")).port, 5003);
  assert.equal(r.allocate("q", input("db", "h")).port, 5004);
  assert.equal(r.peek("h"), undefined, "full: holds never make a port up");
  assert.throws(
    () => r.allocate("q", input("db", "h")),
    (err: unknown) =>
      err instanceof RegistryError && err.code === "RANGE_EXHAUSTED",
  );
});
test("a freed port comes back into picks when its reuseDelay ends", () => {
  let now = 0;
  const r = new Registry<string>({
    range: { "*": [5000, 5003] },
    now: () => now,
    reuseDelay: 5000,
  });
  for (let i = 0; i < 4; i++) r.allocate("o", input("web", "h"));
  r.free("o", { host: "h", port: 5003 });
  now = 1000;
  r.free("o", { host: "h", port: 5000 });
  now = 5000; // 5003's delay is over, 5000's is not: the pick passes it
  assert.equal(r.allocate("o", input("web", "h")).port, 5003);
  now = 6000;
  assert.equal(r.allocate("o", input("web", "h")).port, 5000);
});

test("proposalHold and reuseDelay must be 0 or more milliseconds", () => {
  for (const v of [-1, NaN, Infinity, "5" as unknown as number]) {
    assert.throws(
      () => new Registry({ reuseDelay: v }),
      /Option "reuseDelay" must be a number of milliseconds, 0 or more/,
    );
    assert.throws(
      () => new Registry({ proposalHold: v }),
      /Option "proposalHold" must be a number of milliseconds, 0 or more/,
    );
  }
});

test("peekMany proposes distinct ports, fewer when fewer are free, each held as one peek holds it", () => {
  const r = new Registry<string>({
    range: { "*": [5000, 5003] },
    now: () => 0,
    proposalHold: 2000,
  });
  r.allocate("o", input("web", "h")); // 5000
  assert.deepEqual(r.peekMany("h", 10), [5001, 5002, 5003]);
  assert.deepEqual(r.peekMany("h", 2), [5001, 5002], "all held: oldest first");
  const plain = new Registry<string>({ range: { "*": [5000, 5001] } });
  assert.deepEqual(plain.peekMany("h", 5), [5000, 5001]);
  assert.deepEqual(plain.peekMany("h", 0), []);
});
