/**
 * Tests of the single binary that `deno task binary` builds (dist/seaport)
 * and of the release files of `deno task release` (dist/release/). They run
 * when `$SEAPORT_BINARY` names the binary and `$SEAPORT_RELEASE` the release
 * directory, as `deno task test:binary` sets them; otherwise they skip.
 *
 * The binary runs as a user would run a downloaded file: from an empty
 * directory, with an empty environment (`env -i`), nothing on `$PATH`. The
 * command it supervises is the binary itself, serving a second registry, so
 * nothing but the binary is needed.
 *
 * @module
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { within } from "./_helpers.ts";
import { closedPort, type Proc, skip, start as startProc } from "./_cli.ts";

const WAIT = 10_000;
const binary = process.env.SEAPORT_BINARY;
const release = process.env.SEAPORT_RELEASE;
const here = dirname(fileURLToPath(import.meta.url));

/** The Bun the binary is built with: package.json's pinned dev dependency. */
const bunVersion = (() => {
  try {
    return JSON.parse(readFileSync(join(here, "..", "package.json"), "utf8"))
      .devDependencies.bun as string;
  } catch {
    return "?";
  }
})();

/** deno.json's version, when these tests run from a clone. */
function version(): string | undefined {
  try {
    return JSON.parse(readFileSync(join(here, "..", "deno.json"), "utf8"))
      .version;
  } catch {
    return undefined;
  }
}

/** The binary, run by `env -i` in `cwd` (an empty environment). */
function start(cwd: string, args: string[]): Proc {
  return startProc(["/usr/bin/env", "-i", binary!], args, {}, cwd);
}

/** Runs the binary to completion. */
async function run(cwd: string, args: string[]) {
  await using p = start(cwd, args);
  const { code } = await within(p.closed, WAIT, `seaport ${args.join(" ")}`);
  return { code, stdout: p.text("stdout"), stderr: p.text("stderr") };
}

test("the binary runs from an empty directory with an empty environment", async (t) => {
  if (!binary) {
    return skip(t, "no binary: `deno task test:binary` sets SEAPORT_BINARY");
  }
  const cwd = mkdtempSync(join(tmpdir(), "seaport-binary-"));
  try {
    await t.test("--version prints the version and exits 0", async () => {
      const r = await run(cwd, ["--version"]);
      assert.equal(r.code, 0, r.stderr);
      const expected = version();
      if (expected !== undefined) {
        assert.equal(r.stdout, `seaport ${expected} (bun ${bunVersion})\n`);
      } else assert.match(r.stdout, /^seaport \d+\.\d+\.\d+ \(bun [\d.]+\)\n$/);
      assert.equal(r.stderr, "");
    });

    await t.test("bad usage exits 2, an unreachable server 1", async () => {
      const bad = await run(cwd, ["nope"]);
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, /^seaport: Unknown command "nope"\nUsage: /);
      const port = await closedPort();
      const args = [`127.0.0.1:${port}`, "query", "web", "--timeout", "300"];
      const gone = await run(cwd, args);
      assert.equal(gone.code, 1);
      assert.match(
        gone.stderr,
        /cannot reach the seaport server at .* within 300 ms/,
      );
    });

    await t.test("it serves; show, query and a supervised COMMAND work from other processes; SIGTERM stops it", async () => {
      const free = await closedPort();
      const range = `${free}-${free}`;
      await using server = start(cwd, [
        "0",
        "--host",
        "127.0.0.1",
        "--range",
        range,
        "--http",
        "0",
      ]);
      const [, serverPort] = await server.line(
        /^seaport listening on 127\.0\.0\.1:(\d+)$/,
      );
      const address = `127.0.0.1:${serverPort}`;
      const show = await run(cwd, [address, "show"]);
      assert.deepEqual([show.code, JSON.parse(show.stdout)], [0, []]);
      // The HTTP side and its web view are inside the binary too.
      const [, httpPort] = await server.line(
        /^seaport HTTP on 127\.0\.0\.1:(\d+)$/,
      );
      const page = await fetch(`http://127.0.0.1:${httpPort}/`);
      assert.equal(page.status, 200);
      assert.match(await page.text(), /<table/);
      const metrics = await fetch(`http://127.0.0.1:${httpPort}/metrics`);
      assert.equal(metrics.status, 200);
      assert.match(await metrics.text(), /^# HELP seaport_/m);

      // COMMAND is the binary itself: a second registry on the given port.
      await using svc = start(cwd, [
        address,
        "service",
        "inner@1.0.0",
        "--",
        binary,
        "listen",
        "--host",
        "127.0.0.1",
      ]);
      await svc.line(
        new RegExp(`^seaport listening on 127\\.0\\.0\\.1:${free}$`),
      );
      await svc.line(/^seaport: inner@1\.0\.0 is up on \d+$/, "stderr");
      const query = await run(cwd, [address, "query", "inner@1"]);
      assert.equal(query.code, 0, query.stderr);
      assert.deepEqual(JSON.parse(query.stdout), [`127.0.0.1:${free}`]);
      const inner = await run(cwd, [`127.0.0.1:${free}`, "show"]);
      assert.deepEqual([inner.code, JSON.parse(inner.stdout)], [0, []]);

      svc.signal("SIGTERM");
      assert.deepEqual(await within(svc.closed, WAIT, "the service to stop"), {
        code: 0,
        signal: null,
      });
      const after = await run(cwd, [address, "query", "inner"]);
      assert.deepEqual([after.code, after.stdout], [0, "[]\n"]);
      // SIGTERM reached COMMAND, the inner registry, which has stopped.
      const stopped = [`127.0.0.1:${free}`, "show", "--timeout", "300"];
      assert.equal((await run(cwd, stopped)).code, 1);

      server.signal("SIGTERM");
      assert.deepEqual(
        await within(server.closed, WAIT, "the server to stop"),
        {
          code: 0,
          signal: null,
        },
      );
    });
    // It wrote nothing into the directory it ran in.
    assert.deepEqual(readdirSync(cwd), []);
  } finally {
    rmSync(cwd, { recursive: true, force: true });
  }
});

/** What each release file must be, by the header its platform loads. */
const FORMATS: Record<string, { format: string; arch: string }> = {
  "seaport-linux-x64": { format: "ELF", arch: "x86-64" },
  "seaport-linux-arm64": { format: "ELF", arch: "arm64" },
  "seaport-darwin-x64": { format: "Mach-O", arch: "x86-64" },
  "seaport-darwin-arm64": { format: "Mach-O", arch: "arm64" },
  "seaport-windows-x64.exe": { format: "PE", arch: "x86-64" },
};

/**
 * The executable format and architecture of a file, from its header:
 * ELF (64-bit, little-endian) e_machine, Mach-O 64 cputype, PE32+ Machine.
 */
function header(bytes: Uint8Array): { format: string; arch: string } {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const arches: Record<number, string> = {};
  if (view.getUint32(0) === 0x7f454c46) { // "\x7fELF"
    assert.equal(bytes[4], 2, "ELF class: 64-bit");
    assert.equal(bytes[5], 1, "ELF data: little-endian");
    assert.equal(view.getUint16(16, true), 2, "ELF type: executable");
    Object.assign(arches, { 0x3e: "x86-64", 0xb7: "arm64" });
    const machine = view.getUint16(18, true);
    return { format: "ELF", arch: arches[machine] ?? `machine ${machine}` };
  }
  if (view.getUint32(0, true) === 0xfeedfacf) { // MH_MAGIC_64
    assert.equal(view.getUint32(12, true), 2, "Mach-O filetype: MH_EXECUTE");
    Object.assign(arches, { 0x01000007: "x86-64", 0x0100000c: "arm64" });
    const cpu = view.getUint32(4, true);
    return { format: "Mach-O", arch: arches[cpu] ?? `cputype ${cpu}` };
  }
  if (view.getUint16(0, true) === 0x5a4d) { // "MZ"
    const pe = view.getUint32(0x3c, true);
    assert.equal(view.getUint32(pe), 0x50450000, 'PE signature "PE\\0\\0"');
    assert.equal(view.getUint16(pe + 24, true), 0x20b, "PE32+ optional header");
    assert.equal(view.getUint16(pe + 24 + 68, true), 3, "console subsystem");
    Object.assign(arches, { 0x8664: "x86-64", 0xaa64: "arm64" });
    const machine = view.getUint16(pe + 4, true);
    return { format: "PE", arch: arches[machine] ?? `machine ${machine}` };
  }
  return { format: "unknown", arch: "unknown" };
}

test("each release file is an executable for its platform, listed in SHA256SUMS", (t) => {
  if (!release) {
    return skip(t, "no release: `deno task test:binary` sets SEAPORT_RELEASE");
  }
  const files = readdirSync(release).filter((f) => f !== "SHA256SUMS").sort();
  assert.deepEqual(files, Object.keys(FORMATS).sort());
  const sums = readFileSync(join(release, "SHA256SUMS"), "utf8");
  const listed = new Map(
    sums.trimEnd().split("\n").map((line) => {
      const m = /^([0-9a-f]{64}) {2}(\S+)$/.exec(line);
      assert.ok(m, `SHA256SUMS line "${line}"`);
      return [m[2]!, m[1]!] as const;
    }),
  );
  assert.deepEqual([...listed.keys()].sort(), files);
  for (const file of files) {
    const bytes: Uint8Array = readFileSync(join(release, file));
    assert.deepEqual(header(bytes), FORMATS[file], file);
    const sha = createHash("sha256").update(bytes).digest("hex");
    assert.equal(listed.get(file), sha, `checksum of ${file}`);
  }
  // This machine's own file also runs.
  const own = `seaport-${process.platform}-${process.arch}`;
  if (files.includes(own)) {
    const out = spawnSync(join(release, own), ["--version"], {
      encoding: "utf8",
      env: {},
      timeout: WAIT,
    });
    assert.equal(out.status, 0, out.stderr);
    assert.match(out.stdout, /^seaport \d+\.\d+\.\d+ \(bun [\d.]+\)\n$/);
  }
});
