/**
 * A smoke test of the benchmark suite: `bench/main.ts --quick --json` runs to
 * the end and prints one valid JSON report, and so does `bench/etcd.ts
 * --quick --json` (with an etcd binary). No timing is asserted. It takes a
 * minute or so and installs seaport 2.0.9 from npm, so it only runs with
 * `SEAPORT_BENCH_TEST=1`, and only on Deno (the suite is a Deno program).
 *
 * @module
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { etcdMissing } from "./_etcd.ts";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const onDeno = (globalThis as { Deno?: unknown }).Deno !== undefined;
const skip = process.env.SEAPORT_BENCH_TEST !== "1"
  ? "set SEAPORT_BENCH_TEST=1 to run the benchmark smoke test"
  : !onDeno
  ? "the benchmark suite runs on Deno"
  : false;

if (skip) console.log(`bench_test: skipped (${skip})`);

interface Report {
  runs: number;
  quick: boolean;
  impls: Record<string, { ran: boolean; note?: string }>;
  metrics: { key: string; cells: Record<string, { samples: unknown[] }> }[];
  targets: { id: string; status: Record<string, string> }[];
}

/** Runs `bench/SCRIPT --quick --json`: its exit code, stdout and stderr's tail. */
async function quickJson(
  script: string,
): Promise<{ code: number | null; out: string; err: string }> {
  const child = spawn(
    process.execPath,
    ["run", "--allow-all", join(root, "bench", script), "--quick", "--json"],
    { cwd: root, stdio: ["ignore", "pipe", "pipe"] },
  );
  let out = "";
  let err = "";
  child.stdout!.on("data", (d) => out += d);
  child.stderr!.on("data", (d) => err = (err + d).slice(-4000));
  const code = await new Promise<number | null>((resolve) =>
    child.on("close", resolve)
  );
  return { code, out, err };
}

test(
  "the benchmark suite completes in --quick mode and prints valid JSON",
  { skip, timeout: 600_000 },
  async () => {
    const { code, out, err } = await quickJson("main.ts");
    assert.equal(code, 0, `the suite failed:\n${err}`);
    const report = JSON.parse(out) as Report;
    assert.equal(report.quick, true);
    assert.equal(report.runs, 1);
    assert.ok(report.impls["ours-deno"]?.ran, "ours on Deno ran");
    assert.ok(report.metrics.length > 0, "there are metrics");
    for (const m of report.metrics) {
      assert.ok(
        Object.values(m.cells).some((c) => c.samples.length > 0),
        `${m.key} has a sample`,
      );
    }
    assert.ok(report.targets.length > 0, "targets were judged");
  },
);

test(
  "bench/etcd.ts --quick --json prints one object: the rows of its table and notes",
  { skip: skip || etcdMissing, timeout: 600_000 },
  async () => {
    const { code, out, err } = await quickJson("etcd.ts");
    assert.equal(code, 0, `bench/etcd.ts failed:\n${err}`);
    const report = JSON.parse(out) as {
      rows: { figure: string; memory: string; etcd: string }[];
      notes: string[];
    };
    assert.deepEqual(Object.keys(report), ["rows", "notes"]);
    // registrations (one at a time, and at once) and their floor, query,
    // wake-up and its floor, failover, heap, two idle sizes, the leader killed
    assert.equal(report.rows.length, 11);
    for (const r of report.rows) {
      assert.deepEqual(Object.keys(r), ["figure", "memory", "etcd"]);
      assert.ok(r.figure !== "" && r.memory !== "" && r.etcd !== "");
    }
    assert.ok(report.notes.length > 0);
    assert.ok(report.notes.every((n) => typeof n === "string"));
  },
);
