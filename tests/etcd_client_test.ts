/**
 * The etcd client against real etcd members (tests/_etcd.ts): the gateway's
 * encoding, KV, txn, leases, watches (ordered events, compaction, resuming),
 * failover between members, quorum loss as UNAVAILABLE within the request
 * timeout and recovery, user/password auth, and TLS with a custom CA. Skipped
 * where there is no etcd binary.
 *
 * @module
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  AuthError,
  errorFromWire,
  errorToWire,
  UnavailableError,
} from "../errors.ts";
import {
  createEtcdClient,
  EtcdError,
  type Watch,
  type WatchEnd,
  type WatchEvent,
  WriteBatcher,
} from "../store/etcd/mod.ts";
import { etcdMissing, startEtcd } from "./_etcd.ts";
import { skip as skipTest, within } from "./_helpers.ts";

const skip = etcdMissing;

/** The next `n` events of `w` (progress notifications skipped). */
async function events(w: Watch, n: number, ms = 5000): Promise<WatchEvent[]> {
  const out: WatchEvent[] = [];
  const it = w[Symbol.asyncIterator]();
  await within(
    (async () => {
      while (out.length < n) {
        const r = await it.next();
        if (r.done) throw new Error(`watch ended after ${out.length} events`);
        out.push(...r.value.events);
      }
    })(),
    ms,
    `${n} watch events`,
  );
  return out;
}

/** `[type, key, value, modRevision]` of each event, for exact comparison. */
function shapes(evs: WatchEvent[]) {
  return evs.map((e) => [e.type, e.kv.key, e.kv.value, e.kv.modRevision]);
}

/** Repeats `f` until it resolves (or fails after `ms`). */
async function eventually<T>(f: () => Promise<T>, what: string, ms = 10_000) {
  const deadline = Date.now() + ms;
  while (true) {
    try {
      return await f();
    } catch (err) {
      if (Date.now() > deadline) {
        throw new Error(`Timed out after ${ms} ms waiting for ${what}`, {
          cause: err,
        });
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

test("the etcd client on one member", { skip }, async (t) => {
  // Progress notifications every 300 ms instead of 10 minutes.
  await using etcd = await startEtcd({
    args: ["--experimental-watch-progress-notify-interval=300ms"],
  });
  await using c = createEtcdClient({ endpoints: etcd.endpoints });

  await t.test("put and get round-trip text keys and values, with int64 fields as numbers", async () => {
    const key = "/t/kv/ключ ✓";
    const value = JSON.stringify({ port: 10000, note: "ünïcødé\u0000\n" });
    const put = await c.kv.put(key, value);
    assert.ok(put.header.revision > 1);
    const got = await c.kv.get(key);
    assert.equal(got.count, 1);
    assert.deepEqual(got.kvs, [{
      key,
      value,
      createRevision: put.header.revision,
      modRevision: put.header.revision,
      version: 1,
      lease: "0",
    }]);
    const again = await c.kv.put(key, "v2", { prevKv: true });
    assert.equal(again.prevKv?.value, value);
    const [kv] = (await c.kv.get(key)).kvs;
    assert.equal(kv?.version, 2);
    assert.equal(kv?.createRevision, put.header.revision);
    assert.equal(kv?.modRevision, again.header.revision);
    // Defaults left out by the gateway read as 0, [] and false.
    const missing = await c.kv.get("/t/kv/absent");
    assert.deepEqual([missing.kvs, missing.count, missing.more], [
      [],
      0,
      false,
    ]);
    // Bytes in, text out.
    await c.kv.put(
      new TextEncoder().encode("/t/kv/bytes"),
      new Uint8Array([104, 105]),
    );
    assert.equal((await c.kv.get("/t/kv/bytes")).kvs[0]?.value, "hi");
  });

  await t.test("a prefix range returns its keys in order, cut by a limit, and as of an older revision", async () => {
    const first = await c.kv.put("/t/p/a", "1");
    await c.kv.put("/t/p/c", "3");
    await c.kv.put("/t/p/b", "2");
    await c.kv.put("/t/pz", "not under /t/p/");
    const all = await c.kv.get("/t/p/", { prefix: true });
    assert.deepEqual(all.kvs.map((kv) => [kv.key, kv.value]), [
      ["/t/p/a", "1"],
      ["/t/p/b", "2"],
      ["/t/p/c", "3"],
    ]);
    const two = await c.kv.get("/t/p/", { prefix: true, limit: 2 });
    assert.deepEqual([two.kvs.map((kv) => kv.key), two.count, two.more], [
      ["/t/p/a", "/t/p/b"],
      3,
      true,
    ]);
    const old = await c.kv.get("/t/p/", {
      prefix: true,
      revision: first.header.revision,
    });
    assert.deepEqual(old.kvs.map((kv) => kv.key), ["/t/p/a"]);
    const counted = await c.kv.get("/t/p/", { prefix: true, countOnly: true });
    assert.deepEqual([counted.kvs, counted.count], [[], 3]);
    const del = await c.kv.delete("/t/p/", { prefix: true, prevKv: true });
    assert.equal(del.deleted, 3);
    assert.deepEqual(del.prevKvs.map((kv) => kv.key), [
      "/t/p/a",
      "/t/p/b",
      "/t/p/c",
    ]);
    assert.equal((await c.kv.get("/t/pz")).count, 1);
  });

  await t.test("a txn with a create compare has exactly one winner out of 50 parallel claims", async () => {
    const key = "/t/claim/port-10000";
    const claims = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        c.kv.txn({
          compare: [{ key, target: "create", result: "=", value: 0 }],
          success: [{ op: "put", key, value: `claimant-${i}` }],
          failure: [{ op: "get", key }],
        })),
    );
    const winners = claims.flatMap((r, i) => r.succeeded ? [i] : []);
    assert.equal(winners.length, 1);
    const holder = `claimant-${winners[0]}`;
    for (const r of claims) {
      const [res] = r.responses;
      if (r.succeeded) assert.equal(res?.op, "put");
      else {
        assert.equal(res?.op, "get");
        assert.equal(res?.op === "get" ? res.kvs[0]?.value : undefined, holder);
      }
    }
    assert.equal((await c.kv.get(key)).kvs[0]?.value, holder);
  });

  await t.test("the write batcher sends one turn's writes as one txn, answers a failed compare alone and keeps one key's writes in order", async () => {
    const w = new WriteBatcher(c.kv, { maxOps: 100, inFlight: 4 });
    const taken = await c.kv.put("/t/batch/taken", "someone");
    const keys = Array.from({ length: 150 }, (_, i) => `/t/batch/${i}`);
    const txns = w.txns;
    const [stale, ...fresh] = await Promise.all([
      w.write({ key: "/t/batch/taken", seen: 0, op: "put", value: "me" }),
      ...keys.map((key) => w.write({ key, seen: 0, op: "put", value: key })),
    ]);
    // 151 writes: two txns of 100 and 51; the failed compare of the first
    // sends its other 99 again
    assert.equal(w.txns - txns, 3);
    assert.equal(stale?.succeeded, false);
    assert.equal(
      stale?.succeeded === false ? stale.kv?.value : undefined,
      "someone",
    );
    assert.equal(
      stale?.succeeded === false ? stale.kv?.modRevision : undefined,
      taken.header.revision,
    );
    assert.ok(fresh.every((r) => r.succeeded));
    const got = await c.kv.get("/t/batch/", { prefix: true });
    assert.equal(got.count, 151);
    // one key's second write waits for the first, which moved its revision
    const at = (await c.kv.get(keys[0]!)).kvs[0]!.modRevision;
    const [first, second] = await Promise.all([
      w.write({ key: keys[0]!, seen: at, op: "put", value: "first" }),
      w.write({ key: keys[0]!, seen: at, op: "delete" }),
    ]);
    assert.equal(first?.succeeded, true);
    assert.equal(second?.succeeded, false);
    assert.equal(
      second?.succeeded === false ? second.kv?.value : undefined,
      "first",
    );
    await c.kv.delete("/t/batch/", { prefix: true });
  });

  await t.test("a txn compares mod revision, value and version, and refuses more than maxTxnOps operations", async () => {
    const put = await c.kv.put("/t/txn/k", "a");
    const ok = await c.kv.txn({
      compare: [
        {
          key: "/t/txn/k",
          target: "mod",
          result: "=",
          value: put.header.revision,
        },
        { key: "/t/txn/k", target: "value", result: "=", value: "a" },
        { key: "/t/txn/k", target: "version", result: ">", value: 0 },
      ],
      success: [
        { op: "put", key: "/t/txn/k", value: "b" },
        { op: "delete", key: "/t/txn/other" },
        { op: "get", key: "/t/txn/k" },
      ],
    });
    assert.equal(ok.succeeded, true);
    assert.deepEqual(ok.responses.map((r) => r.op), ["put", "delete", "get"]);
    const last = ok.responses[2];
    assert.equal(last?.op === "get" ? last.kvs[0]?.value : undefined, "b");
    const stale = await c.kv.txn({
      compare: [{
        key: "/t/txn/k",
        target: "mod",
        result: "=",
        value: put.header.revision,
      }],
      success: [{ op: "put", key: "/t/txn/k", value: "lost update" }],
    });
    assert.deepEqual([stale.succeeded, stale.responses], [false, []]);
    assert.equal((await c.kv.get("/t/txn/k")).kvs[0]?.value, "b");
    const ops = Array.from(
      { length: 128 },
      (_, i) => ({ op: "put" as const, key: `/t/txn/many/${i}`, value: "x" }),
    );
    assert.equal((await c.kv.txn({ success: ops })).succeeded, true);
    assert.equal(
      (await c.kv.get("/t/txn/many/", { prefix: true, countOnly: true })).count,
      128,
    );
    await assert.rejects(
      c.kv.txn({
        success: [...ops, { op: "put", key: "/t/txn/many/128", value: "x" }],
      }),
      (err: unknown) =>
        err instanceof RangeError && /at most 128 operations/.test(err.message),
    );
  });

  await t.test("a lease's keys live while it is kept alive and are deleted when it expires", async () => {
    const lease = await c.lease.grant(1);
    assert.match(lease.id, /^[1-9]\d*$/);
    assert.equal(lease.ttl, 1);
    await c.kv.put("/t/lease/a", "x", { lease: lease.id });
    await using w = c.watcher.watch("/t/lease/a");
    assert.equal(await w.ready, true);
    // Kept alive for three TTLs, the key stays.
    const until = Date.now() + 3000;
    while (Date.now() < until) {
      assert.equal((await c.lease.keepAliveOnce(lease.id)).ttl, 1);
      await new Promise((r) => setTimeout(r, 300));
    }
    const kept = await c.kv.get("/t/lease/a");
    assert.equal(kept.kvs[0]?.lease, lease.id);
    const ttl = await c.lease.timeToLive(lease.id, { keys: true });
    assert.deepEqual([ttl.grantedTtl, ttl.keys], [1, ["/t/lease/a"]]);
    // Left alone, it expires and its key is deleted.
    const [gone] = await events(w, 1, 5000);
    assert.deepEqual([gone?.type, gone?.kv.key], ["delete", "/t/lease/a"]);
    await assert.rejects(
      c.lease.keepAliveOnce(lease.id),
      (err: unknown) => err instanceof EtcdError && err.leaseNotFound,
    );
    assert.equal((await c.lease.timeToLive(lease.id)).ttl, -1);
  });

  await t.test("revoking a lease deletes its keys at once", async () => {
    const lease = await c.lease.grant(60);
    await c.kv.put("/t/revoke/a", "1", { lease: lease.id });
    await c.kv.put("/t/revoke/b", "2", { lease: lease.id });
    assert.ok((await c.lease.leases()).includes(lease.id));
    await c.lease.revoke(lease.id);
    assert.equal((await c.kv.get("/t/revoke/", { prefix: true })).count, 0);
    assert.equal((await c.lease.leases()).includes(lease.id), false);
    await assert.rejects(
      c.lease.revoke(lease.id),
      (err: unknown) => err instanceof EtcdError && err.leaseNotFound,
    );
  });

  await t.test("a watch sees puts and deletes under a prefix in order, with their revisions", async () => {
    await using w = c.watcher.watch("/t/watch/", {
      prefix: true,
      prevKv: true,
    });
    assert.equal(await w.ready, true);
    const r1 = await c.kv.put("/t/watch/a", "1");
    const r2 = await c.kv.put("/t/watch/b", "2");
    await c.kv.put("/t/other", "not watched");
    const r3 = await c.kv.put("/t/watch/a", "3");
    const r4 = await c.kv.delete("/t/watch/a");
    const r5 = await c.kv.txn({
      success: [
        { op: "put", key: "/t/watch/c", value: "5" },
        { op: "delete", key: "/t/watch/b" },
      ],
    });
    const seen = await events(w, 6);
    assert.deepEqual(shapes(seen), [
      ["put", "/t/watch/a", "1", r1.header.revision],
      ["put", "/t/watch/b", "2", r2.header.revision],
      ["put", "/t/watch/a", "3", r3.header.revision],
      ["delete", "/t/watch/a", "", r4.header.revision],
      ["put", "/t/watch/c", "5", r5.header.revision],
      ["delete", "/t/watch/b", "", r5.header.revision],
    ]);
    assert.equal(seen[3]?.prevKv?.value, "3");
    assert.equal(w.revision, r5.header.revision);
    await w.close();
    assert.deepEqual(await w.ended, {
      reason: "closed",
      revision: r5.header.revision,
    });
  });

  await t.test("a watch from a past revision replays history, and from a compacted one ends as compacted", async () => {
    const a = await c.kv.put("/t/compact/k", "1");
    const b = await c.kv.put("/t/compact/k", "2");
    const replay = c.watcher.watch("/t/compact/k", {
      startRevision: a.header.revision,
    });
    assert.deepEqual(shapes(await events(replay, 2)), [
      ["put", "/t/compact/k", "1", a.header.revision],
      ["put", "/t/compact/k", "2", b.header.revision],
    ]);
    await replay.close();
    await c.kv.compact(b.header.revision);
    await assert.rejects(
      c.kv.get("/t/compact/k", { revision: a.header.revision }),
      (err: unknown) => err instanceof EtcdError && err.compacted,
    );
    const w = c.watcher.watch("/t/compact/", {
      prefix: true,
      startRevision: a.header.revision,
    });
    const end = await within(w.ended, 5000, "the compacted watch to end");
    assert.deepEqual(end, {
      reason: "compacted",
      compactRevision: b.header.revision,
      revision: a.header.revision - 1,
    });
    // Resynchronise: read the range, then watch from its revision + 1.
    const now = await c.kv.get("/t/compact/", { prefix: true });
    assert.deepEqual(now.kvs.map((kv) => kv.value), ["2"]);
    await using again = c.watcher.watch("/t/compact/", {
      prefix: true,
      startRevision: now.header.revision + 1,
    });
    const d = await c.kv.put("/t/compact/k", "3");
    assert.deepEqual(shapes(await events(again, 1)), [[
      "put",
      "/t/compact/k",
      "3",
      d.header.revision,
    ]]);
  });

  await t.test("a quiet watch gets progress notifications that carry its revision past other keys' changes", async () => {
    await using w = c.watcher.watch("/t/progress/", { prefix: true });
    assert.equal(await w.ready, true);
    const elsewhere = await c.kv.put("/t/not-progress", "x");
    const it = w[Symbol.asyncIterator]();
    const batch = await within(
      (async () => {
        while (true) {
          const r = await it.next();
          if (r.done) throw new Error("the watch ended");
          if (r.value.header.revision >= elsewhere.header.revision) {
            return r.value;
          }
        }
      })(),
      3000,
      "a progress notification",
    );
    assert.deepEqual([batch.progress, batch.events], [true, []]);
    assert.ok(w.revision >= elsewhere.header.revision);
  });

  await t.test("a quiet watch reopens itself after its idle timeout and misses nothing", async () => {
    await using w = c.watcher.watch("/t/idle/", {
      prefix: true,
      idleTimeout: 200,
      progressNotify: false, // nothing at all arrives while it is quiet
    });
    assert.equal(await w.ready, true);
    await new Promise((r) => setTimeout(r, 700)); // several idle timeouts pass
    assert.ok(w.reopens >= 2, `reopened ${w.reopens} times`);
    const p = await c.kv.put("/t/idle/k", "v");
    assert.deepEqual(shapes(await events(w, 1)), [[
      "put",
      "/t/idle/k",
      "v",
      p.header.revision,
    ]]);
    const ended = await Promise.race([w.ended, Promise.resolve("running")]);
    assert.equal(ended, "running");
  });

  await t.test("bad input is refused with an error naming it", async () => {
    assert.throws(
      () => createEtcdClient({ endpoints: "localhost:2379" }),
      /Invalid etcd endpoint "localhost:2379"/,
    );
    assert.throws(() => createEtcdClient({ endpoints: [] }), /at least one/);
    assert.throws(
      () => createEtcdClient({ endpoints: etcd.endpoints, requestTimeout: 0 }),
      /"requestTimeout" must be a positive integer/,
    );
    await assert.rejects(c.kv.get(""), /An etcd key must not be empty/);
    await assert.rejects(
      c.lease.grant(0),
      /A lease TTL must be a positive integer, got 0/,
    );
  });
});

test(
  "every request settles within the request timeout: refused endpoints give UNAVAILABLE naming them",
  { skip },
  async () => {
    // Ports that nothing listens on: bound once and released by the harness's
    // way of finding ports is not needed; port 1 and 9 are never etcd.
    const endpoints = ["http://127.0.0.1:1", "http://127.0.0.1:9"];
    await using c = createEtcdClient({ endpoints, requestTimeout: 500 });
    const started = Date.now();
    await assert.rejects(c.kv.get("k"), (err: unknown) => {
      assert.ok(err instanceof UnavailableError, String(err));
      assert.equal(err.code, "UNAVAILABLE");
      assert.match(err.message, /http:\/\/127\.0\.0\.1:1 \(/);
      assert.match(err.message, /http:\/\/127\.0\.0\.1:9 \(/);
      return true;
    });
    const took = Date.now() - started;
    assert.ok(took >= 400 && took < 1500, `took ${took} ms`);
    // A write to a refused endpoint also fails over (it never reached etcd).
    await assert.rejects(c.kv.put("k", "v"), UnavailableError);
  },
);

test(
  "a three-member cluster: failover, leader loss, a watch resumed, quorum lost and regained",
  { skip },
  async (t) => {
    await using etcd = await startEtcd({ members: 3 });
    const [m0, m1, m2] = etcd.members;
    assert.ok(m0 && m1 && m2);
    await using c = createEtcdClient({
      endpoints: etcd.endpoints,
      requestTimeout: 2000,
    });
    await c.kv.put("/t/cluster/warm", "up");

    await t.test("requests fail over to the next endpoint when the first member is killed", async () => {
      // The first endpoint is a follower: a leader's death also stalls the
      // writes in flight until the election (the next test).
      const leader = await etcd.leader();
      const follower = etcd.members.find((m) => m !== leader)!;
      const others = etcd.members.filter((m) => m !== follower);
      await using f = createEtcdClient({
        endpoints: [follower, ...others].map((m) => m.clientUrl),
        requestTimeout: 2000,
      });
      await f.kv.put("/t/cluster/a", "0");
      await follower.kill();
      try {
        const started = Date.now();
        const put = await f.kv.put("/t/cluster/a", "1");
        const got = await f.kv.get("/t/cluster/a");
        const took = Date.now() - started;
        assert.equal(got.kvs[0]?.modRevision, put.header.revision);
        assert.equal(got.kvs[0]?.value, "1");
        assert.ok(took < 1000, `failover took ${took} ms`);
      } finally {
        await follower.restart();
        await etcd.healthy();
      }
    });

    await t.test("writes resume after the leader is killed, and nothing written is lost", async () => {
      const leader = await etcd.leader();
      const before = await c.kv.put("/t/cluster/before", "kept");
      await leader.kill();
      try {
        const started = Date.now();
        const after = await eventually(
          () => c.kv.put("/t/cluster/after", "ok"),
          "a write after the leader died",
        );
        console.log(
          `writes resumed ${
            Date.now() - started
          } ms after the leader was killed`,
        );
        assert.ok(after.header.revision > before.header.revision);
        const got = await c.kv.get("/t/cluster/", { prefix: true });
        assert.deepEqual(got.kvs.map((kv) => [kv.key, kv.value]), [
          ["/t/cluster/a", "1"],
          ["/t/cluster/after", "ok"],
          ["/t/cluster/before", "kept"],
          ["/t/cluster/warm", "up"],
        ]);
      } finally {
        await leader.restart();
        await etcd.healthy();
      }
    });

    await t.test("a watch whose member dies ends as broken and resumes from its last revision + 1 without a gap", async () => {
      // A follower: killing it leaves the cluster a leader.
      const leader = await etcd.leader();
      const m = etcd.members.find((x) => x !== leader)!;
      await using viaM = createEtcdClient({
        endpoints: [m.clientUrl],
        requestTimeout: 2000,
      });
      const w = viaM.watcher.watch("/t/resume/", { prefix: true });
      assert.equal(await w.ready, true);
      const first = await c.kv.put("/t/resume/k", "1");
      assert.deepEqual(shapes(await events(w, 1)), [[
        "put",
        "/t/resume/k",
        "1",
        first.header.revision,
      ]]);
      await m.kill();
      let end: WatchEnd;
      let missed;
      try {
        end = await within(w.ended, 5000, "the watch to break");
        assert.equal(end.reason, "broken");
        assert.equal(end.revision, first.header.revision);
        // Changes while the watch is down, through the other members.
        missed = [
          await c.kv.put("/t/resume/k", "2"),
          await c.kv.delete("/t/resume/k"),
          await c.kv.put("/t/resume/j", "3"),
        ];
      } finally {
        await m.restart();
        await etcd.healthy([m]);
      }
      await using resumed = viaM.watcher.watch("/t/resume/", {
        prefix: true,
        startRevision: end.revision + 1,
      });
      assert.deepEqual(shapes(await events(resumed, 3)), [
        ["put", "/t/resume/k", "2", missed[0]!.header.revision],
        ["delete", "/t/resume/k", "", missed[1]!.header.revision],
        ["put", "/t/resume/j", "3", missed[2]!.header.revision],
      ]);
    });

    await t.test("with quorum lost a write fails with UNAVAILABLE within the request timeout, and writes succeed once it is back", async () => {
      try {
        // Only once both are stopped is quorum lost: a member that has been
        // sent SIGSTOP but still runs can acknowledge the write.
        await Promise.all([m1.stop(), m2.stop()]);
        const started = Date.now();
        await assert.rejects(
          c.kv.put("/t/quorum/during", "v"),
          (err: unknown) => {
            assert.ok(err instanceof UnavailableError, String(err));
            assert.match(
              err.message,
              /^etcd is unavailable: \/v3\/kv\/put failed after \d+ ms; tried .*; the write may or may not have taken effect$/,
            );
            return true;
          },
        );
        const took = Date.now() - started;
        assert.ok(took < 2000 + 500, `took ${took} ms`);
        const read = Date.now();
        await assert.rejects(c.kv.get("/t/quorum/during"), UnavailableError);
        assert.ok(
          Date.now() - read < 2500,
          `read took ${Date.now() - read} ms`,
        );
        // A serializable read is answered from a member's own state: the
        // request asks past the stopped members within its timeout.
        const stale = await c.kv.get("/t/cluster/warm", { serializable: true });
        assert.equal(stale.kvs[0]?.value, "up");
      } finally {
        m1.cont();
        m2.cont();
      }
      const back = Date.now();
      const put = await eventually(
        () => c.kv.put("/t/quorum/after", "v"),
        "a write after quorum returned",
      );
      console.log(
        `writes succeeded ${Date.now() - back} ms after quorum returned`,
      );
      assert.equal(
        (await c.kv.get("/t/quorum/after")).kvs[0]?.modRevision,
        put.header.revision,
      );
      // The write that failed was proposed, and etcd may still commit it
      // once quorum returns: "may or may not have taken effect" is exact.
      const during = await c.kv.get("/t/quorum/during");
      assert.ok(during.count === 0 || during.kvs[0]?.value === "v");
      console.log(
        `the write that failed during quorum loss ${
          during.count === 0 ? "did not take effect" : "took effect later"
        }`,
      );
    });
  },
);

test("an UnavailableError crosses the wire as itself", () => {
  const err = new UnavailableError("etcd is unavailable: tried http://a:2379");
  const back = errorFromWire(errorToWire(err));
  assert.ok(back instanceof UnavailableError);
  assert.deepEqual([back.code, back.message], ["UNAVAILABLE", err.message]);
});

/** Calls the gateway directly, for setting etcd up. */
async function admin(
  endpoint: string,
  path: string,
  body: object,
  token?: string,
) {
  const res = await fetch(endpoint + path, {
    method: "POST",
    headers: token === undefined ? {} : { authorization: token },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  assert.equal(res.status, 200, `${path}: ${text}`);
  return JSON.parse(text) as Record<string, unknown>;
}

test(
  "with auth enabled the client authenticates with a user and password, and again when its token expires",
  {
    skip,
  },
  async () => {
    // Tokens that expire after a second unused, to see the client renew one.
    await using etcd = await startEtcd({ args: ["--auth-token-ttl=1"] });
    const [ep] = etcd.endpoints;
    await admin(ep!, "/v3/auth/user/add", { name: "root", password: "rootpw" });
    await admin(ep!, "/v3/auth/role/add", { name: "root" });
    await admin(ep!, "/v3/auth/user/grant", { user: "root", role: "root" });
    await admin(ep!, "/v3/auth/enable", {});
    await using anonymous = createEtcdClient({ endpoints: etcd.endpoints });
    await assert.rejects(
      anonymous.kv.get("k"),
      (err: unknown) =>
        err instanceof AuthError && /user name is empty/.test(err.message),
    );
    await using wrong = createEtcdClient({
      endpoints: etcd.endpoints,
      username: "root",
      password: "nope",
    });
    await assert.rejects(
      wrong.kv.get("k"),
      (err: unknown) =>
        err instanceof AuthError && /authentication failed/.test(err.message),
    );
    await using c = createEtcdClient({
      endpoints: etcd.endpoints,
      username: "root",
      password: "rootpw",
    });
    const put = await c.kv.put("/t/auth/k", "v");
    assert.equal(
      (await c.kv.get("/t/auth/k")).kvs[0]?.modRevision,
      put.header.revision,
    );
    await using w = c.watcher.watch("/t/auth/", { prefix: true });
    assert.equal(await w.ready, true);
    // The token expires unused; the next request is refused with "invalid auth
    // token", and the client authenticates again and repeats it.
    const { token: old } = await admin(ep!, "/v3/auth/authenticate", {
      name: "root",
      password: "rootpw",
    });
    await new Promise((r) => setTimeout(r, 2500));
    const stale = await fetch(`${ep}/v3/kv/range`, {
      method: "POST",
      headers: { authorization: String(old) },
      body: JSON.stringify({ key: btoa("k") }),
    });
    assert.match(await stale.text(), /invalid auth token/);
    const again = await c.kv.put("/t/auth/k", "after expiry");
    assert.equal(
      (await c.kv.get("/t/auth/k")).kvs[0]?.modRevision,
      again.header.revision,
    );
    // The watch, opened with the first token, outlives it.
    assert.deepEqual(shapes(await events(w, 1)), [
      ["put", "/t/auth/k", "after expiry", again.header.revision],
    ]);
  },
);

/** A CA and a server certificate it signed for 127.0.0.1, made with openssl. */
function makeCa(dir: string): string | undefined {
  const run = (args: string[]) => {
    const out = spawnSync("openssl", args, { cwd: dir, encoding: "utf8" });
    if (out.error !== undefined) {
      return `openssl is not available (${out.error.message})`;
    }
    return out.status === 0
      ? undefined
      : `openssl ${args[0]} failed: ${out.stderr}`;
  };
  const ec = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
  ];
  writeFileSync(
    join(dir, "ext.cnf"),
    "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n",
  );
  return run([
    "req",
    "-x509",
    ...ec,
    "-days",
    "1",
    "-subj",
    "/CN=seaport test CA",
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
  ]) ??
    run([
      "req",
      ...ec,
      "-subj",
      "/CN=localhost",
      "-keyout",
      "server.key",
      "-out",
      "server.csr",
    ]) ??
    run([
      "x509",
      "-req",
      "-in",
      "server.csr",
      "-CA",
      "ca.pem",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-days",
      "1",
      "-extfile",
      "ext.cnf",
      "-out",
      "server.pem",
    ]);
}

test("an https member is reached with a custom CA, and refused without it", {
  skip,
}, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "seaport-etcd-tls-"));
  try {
    const failed = makeCa(dir);
    if (failed !== undefined) return skipTest(t, failed);
    await using etcd = await startEtcd({
      tls: {
        certFile: join(dir, "server.pem"),
        keyFile: join(dir, "server.key"),
      },
    });
    assert.match(etcd.endpoints[0]!, /^https:/);
    const ca = readFileSync(join(dir, "ca.pem"), "utf8");
    await using c = createEtcdClient({
      endpoints: etcd.endpoints,
      ca,
      requestTimeout: 3000,
    });
    const put = await eventually(
      () => c.kv.put("/t/tls/k", "v"),
      "the TLS member to answer",
    );
    await using w = c.watcher.watch("/t/tls/", { prefix: true });
    assert.equal(await w.ready, true);
    const next = await c.kv.put("/t/tls/k", "w");
    assert.deepEqual(shapes(await events(w, 1)), [[
      "put",
      "/t/tls/k",
      "w",
      next.header.revision,
    ]]);
    assert.ok(next.header.revision > put.header.revision);
    await using untrusting = createEtcdClient({
      endpoints: etcd.endpoints,
      requestTimeout: 500,
    });
    await assert.rejects(untrusting.kv.get("/t/tls/k"), UnavailableError);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
