/**
 * The server/client suites again, against the etcd store: one real etcd
 * member, and each suite file run as its own `deno test` with
 * `$SEAPORT_TEST_ETCD` set, so that every server it creates (through
 * `serve()`, `testStore()` or `testStoreArgs()` in _helpers.ts) keeps its
 * registry in etcd under a prefix of its own. Every test of these suites
 * passes on etcd; a `SKIP:` line a suite prints is shown here.
 *
 * Deno only: under Node and Bun (the built npm package) the same suites run
 * with the in-memory store, and the etcd store's own tests run there too.
 *
 * @module
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { etcdMissing, startEtcd } from "./_etcd.ts";
import { runtime, skip, testEtcd, within } from "./_helpers.ts";

const here = dirname(fileURLToPath(import.meta.url));

/** The suites that do not depend on the store, run again on etcd. */
const SUITES = [
  "server_client_test.ts",
  "readiness_test.ts",
  "liveness_test.ts",
  "restart_test.ts",
  "http_test.ts",
  "cli_commands_test.ts",
  "service_test.ts",
  "batch_test.ts",
  "lost_test.ts",
  "reuse_test.ts",
];

/** Runs one suite file with `deno test`; resolves with its exit code and output. */
function denoTest(
  file: string,
  endpoints: string,
): Promise<{ code: number | null; output: string }> {
  const deno = (globalThis as { Deno?: { execPath(): string } }).Deno!;
  const child = spawn(
    deno.execPath(),
    ["test", "--allow-all", "--no-check", join(here, file)],
    {
      env: { ...process.env, SEAPORT_TEST_ETCD: endpoints, NO_COLOR: "1" },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  let output = "";
  child.stdout!.setEncoding("utf8").on("data", (s: string) => output += s);
  child.stderr!.setEncoding("utf8").on("data", (s: string) => output += s);
  return new Promise((resolve) =>
    child.once("close", (code) => resolve({ code, output }))
  );
}

test("the server/client suites pass against a single etcd member", async (t) => {
  if (etcdMissing) return skip(t, etcdMissing);
  if (runtime !== "deno") {
    return skip(t, "run under Deno (deno task test:deno)");
  }
  if (testEtcd !== undefined) return skip(t, "already on etcd");
  await using etcd = await startEtcd();
  for (const file of SUITES) {
    await t.test(`${file} on etcd`, async () => {
      const { code, output } = await within(
        denoTest(file, etcd.endpoints[0]!),
        300_000,
        `${file} on etcd`,
      );
      const summary = output.trimEnd().split("\n").slice(-1)[0] ?? "";
      const skipped = output.split("\n").filter((l) => l.startsWith("SKIP: "));
      console.log(`${file} on etcd: ${summary}`);
      for (const line of new Set(skipped)) console.log(`  ${line}`);
      assert.equal(code, 0, `${file} failed on etcd:\n${output}`);
    });
  }
});
