/**
 * Tests of the command line: `main([...], io)` in-process, then the real
 * `seaport` as subprocesses on loopback (`deno run cli.ts` on Deno, the
 * installed package's bin on Node, or `$SEAPORT_CLI`), then the single binary
 * from `deno compile` when a Deno runtime for it is available.
 *
 * @module
 */
import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import process from "node:process";
import { main } from "../cli.ts";
import { runtime, within } from "./_helpers.ts";
import {
  capture,
  cliCommand,
  closedPort,
  fetchBody,
  fixtureCommand,
  here,
  root,
  run,
  skip,
  start,
  WAIT,
} from "./_cli.ts";

// ---- in-process: main([...], io) ----

/**
 * The released version: deno.json's here, the installed package's when these
 * tests run from the npm package.
 */
function releasedVersion(): string | undefined {
  const names = ["deno.json", "node_modules/@seaport/seaport/package.json"];
  for (let dir = here; dir !== dirname(dir); dir = dirname(dir)) {
    for (const name of names) {
      const file = join(dir, name);
      if (existsSync(file)) {
        return JSON.parse(readFileSync(file, "utf8")).version;
      }
    }
  }
  return undefined;
}

test("--version prints VERSION, which equals deno.json's version", async (t) => {
  const version = releasedVersion();
  if (version === undefined) return skip(t, "no deno.json or package found");
  for (const flag of ["--version", "-v"]) {
    const c = capture();
    assert.equal(await main([flag], c.io), 0);
    assert.match(
      c.out(),
      new RegExp(
        `^seaport ${version} \\((deno|node|bun) v?\\d+\\.\\d+\\S*\\)\n$`,
      ),
    );
  }
});

test("--help describes every command and exits 0", async () => {
  const c = capture();
  assert.equal(await main(["--help"], c.io), 0);
  for (const word of ["show", "query", "service", "watch", "Exit codes"]) {
    assert.match(c.out(), new RegExp(word));
  }
  const forms: [string[], RegExp][] = [
    [["listen", "--help"], /--range LO-HI/],
    [["9090", "-h"], /--range LO-HI/],
    [["localhost:9090", "show", "--help"], /port map/],
    [["show", "--help"], /port map/],
    [["localhost:9090", "query", "--help"], /NAME@RANGE/],
    [["help", "service"], /-- COMMAND \[ARGS\.\.\.\]/],
    [["register", "--help"], /--meta\.KEY=VALUE/],
    [["[::1]:9090", "watch", "-h"], /JSON object per\s+line/],
    [["get", "--help"], /Waits until a service matches/],
    [["assume", "--help"], /already\s+running/],
    [["free", "--help"], /whoever holds it/],
    [["completion", "--help"], /bash or zsh/],
  ];
  for (const [args, re] of forms) {
    const h = capture();
    assert.equal(await main(args, h.io), 0, args.join(" "));
    assert.match(h.out(), /^Usage: seaport /, args.join(" "));
    assert.match(h.out(), re, args.join(" "));
    assert.equal(h.err(), "");
  }
});

test("bad usage prints a message and the usage on stderr and exits 2", async () => {
  const cases: [string[], RegExp][] = [
    [[], /Missing a command/],
    [["nope"], /Unknown command "nope"/],
    [["localhost:9090"], /Missing a command after "localhost:9090"/],
    [["localhost:9090", "frob"], /Unknown command "frob"/],
    [["70000"], /Invalid port "70000"/],
    [["listen", "-1"], /Invalid port "-1"|Unknown option/],
    [["0", "--range", "5-3"], /Invalid range "5-3"/],
    [["0", "--range", "abc"], /Invalid range "abc"/],
    [["0", "--range", "1-70000"], /Invalid range "1-70000"/],
    [["0", "--reuse-delay", "soon"], /Invalid --reuse-delay "soon"/],
    [["0", "--timeout", "5"], /"--timeout" does not apply to "listen"/],
    [["0", "--secret"], /"--secret" needs a value/],
    [["0", "--bogus"], /Unknown option "--bogus"/],
    [["localhost:9090", "show", "web", "extra"], /Unexpected argument "extra"/],
    [["localhost:70000", "show"], /port/],
    [["localhost:9090", "query"], /Missing arguments for "query"/],
    [["localhost:9090", "query", "web@nope"], /Invalid pattern "web@nope"/],
    [["localhost:9090", "query", "web", "--timeout", "0"], /Invalid --timeout/],
    [
      ["localhost:9090", "query", "web", "--timeout", "1.5"],
      /Invalid --timeout/,
    ],
    [["localhost:9090", "show", "--", "ls"], /only apply to "service"/],
    [["localhost:9090", "service", "web@1.0.0"], /Missing the command/],
    [["localhost:9090", "service", "web@1.0.0", "--"], /Missing the command/],
    [["localhost:9090", "service", "web@x", "--", "ls"], /Invalid role/],
    [
      ["register", "localhost:9090", "web", "--meta.zone", "--", "ls"],
      /--meta\.KEY=VALUE/,
    ],
    [
      ["localhost:9090", "service", "web", "--meta.port=1", "--", "ls"],
      /reserved field "port"/,
    ],
    [
      ["localhost:9090", "query", "web", "--meta.a=b"],
      /"--meta.KEY=VALUE" does not apply to "query"/,
    ],
  ];
  for (const [args, re] of cases) {
    const c = capture();
    assert.equal(await main(args, c.io), 2, args.join(" "));
    assert.match(c.err(), re, args.join(" "));
    assert.match(c.err(), /^seaport: .*\nUsage: seaport /, args.join(" "));
    assert.equal(c.out(), "");
  }
});

test("a server run by main() serves until its signal aborts, then exits 0", async () => {
  const stop = new AbortController();
  const server = capture({}, stop.signal);
  const running = main(["0", "--host", "127.0.0.1"], server.io);
  const [, port] = await server.line(
    /^seaport listening on 127\.0\.0\.1:(\d+)\n/,
  );
  assert.ok(Number(port) > 0);

  const q = capture();
  assert.equal(await main([`127.0.0.1:${port}`, "query", "web"], q.io), 0);
  assert.equal(q.out(), "[]\n");
  const s = capture();
  assert.equal(await main(["show", `127.0.0.1:${port}`], s.io), 0);
  assert.deepEqual(JSON.parse(s.out()), []);

  stop.abort();
  assert.equal(await within(running, WAIT, "the server to stop"), 0);
});

test("a secret is required, checked, and read from SEAPORT_SECRET", async () => {
  const stop = new AbortController();
  const server = capture({ SEAPORT_SECRET: "beep boop" }, stop.signal);
  const running = main(["0", "--host", "127.0.0.1"], server.io);
  const [, port] = await server.line(/listening on \S*:(\d+)/);
  const address = `127.0.0.1:${port}`;
  try {
    const right = capture();
    const args = [address, "query", "web", "--secret", "beep boop"];
    assert.equal(await main(args, right.io), 0);
    assert.equal(right.out(), "[]\n");

    const fromEnv = capture({ SEAPORT_SECRET: "beep boop" });
    assert.equal(await main([address, "show"], fromEnv.io), 0);

    const wrong = capture();
    assert.equal(
      await main([address, "show", "--secret", "nope"], wrong.io),
      1,
    );
    assert.match(wrong.err(), /^seaport: .*rejected the secret/);

    const none = capture();
    assert.equal(await main([address, "query", "web"], none.io), 1);
    assert.match(none.err(), /requires a secret/);
  } finally {
    stop.abort();
    await within(running, WAIT, "the server to stop");
  }
});

test("show and query fail fast and clearly when the server is unreachable", async () => {
  const port = await closedPort();
  for (const command of ["show", "query", "watch"]) {
    const c = capture();
    const args = [`127.0.0.1:${port}`, command, "--timeout", "300"];
    if (command === "query") args.push("web");
    const started = Date.now();
    assert.equal(await within(main(args, c.io), 3000, command), 1);
    assert.ok(Date.now() - started < 2000, `${command} took too long`);
    assert.match(
      c.err(),
      new RegExp(
        `^seaport: cannot reach the seaport server at 127\\.0\\.0\\.1:${port} within 300 ms \\(`,
      ),
    );
  }
});

// ---- subprocesses ----

/** Every subprocess scenario, against the CLI that `cli` launches. */
async function subprocessSuite(t: TestContext, cli: string[]) {
  await t.test("`seaport 0` prints its real port and exits 0 on SIGINT", async () => {
    await using server = start(cli, ["0"]);
    const [, port] = await server.line(/^seaport listening on :(\d+)$/);
    assert.ok(Number(port) > 0);
    server.signal("SIGINT");
    assert.deepEqual(await within(server.closed, WAIT, "exit"), {
      code: 0,
      signal: null,
    });
  });

  await t.test("service supervises COMMAND; query, show and watch see it", async (t) => {
    const free = await closedPort();
    await using server = start(cli, ["0", "--range", `${free}-${free}`]);
    const [, serverPort] = await server.line(/listening on :(\d+)/);
    const address = `127.0.0.1:${serverPort}`;
    await using watch = start(cli, [address, "watch"]);
    await watch.line(/^seaport: watching/, "stderr");
    await using svc = start(cli, [
      address,
      "service",
      "web@1.2.3",
      "--meta.zone=eu",
      "--",
      ...fixtureCommand,
      "--hold",
    ]);
    const query = async (...args: string[]) => {
      const r = await run(cli, args);
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(r.stdout);
    };
    let first: { pid: number; port: number };

    await t.test("COMMAND gets the port as its last argument and in $PORT", async () => {
      const { input: line } = await svc.line(/"event":"start"/);
      const start = JSON.parse(line);
      first = start;
      assert.equal(start.port, free, "the port from --range");
      assert.deepEqual(start.args, ["--hold", String(start.port)]);
      assert.equal(start.envPort, String(start.port));
    });

    await t.test("the service is visible only once COMMAND accepts connections", async () => {
      assert.deepEqual(await query(address, "query", "web@1.2.x"), []);
      assert.deepEqual(await query(address, "show"), []);
      process.kill(first.pid, "SIGUSR2"); // the fixture starts listening
      await svc.line(/"event":"listening"/);
      const { input: event } = await watch.line(/"type":"allocate"/);
      const { record } = JSON.parse(event);
      assert.equal(record.port, first.port);
      assert.equal(record.role, "web");
      assert.equal(await fetchBody(first.port), "beep boop\r\n");
      const where = `127.0.0.1:${first.port}`;
      assert.deepEqual(await query(address, "query", "web@1.2.x"), [where]);
      assert.deepEqual(await query("query", address, "web@^1"), [where]);
      assert.deepEqual(await query(address, "query", "web@2"), []);
      const [shown] = await query("show", address);
      assert.equal(shown.port, first.port);
      assert.equal(shown.version, "1.2.3");
      assert.equal(shown.zone, "eu");
    });

    await t.test("a killed COMMAND is restarted on the same port", async () => {
      process.kill(first.pid, "SIGKILL");
      await svc.line(/exited with signal SIGKILL; restarting/, "stderr");
      const { input: line } = await svc.line(/"event":"start"/);
      const again = JSON.parse(line);
      assert.notEqual(again.pid, first.pid);
      assert.equal(again.port, first.port);
      const { input: hidden } = await watch.line(/"type":"free"/);
      assert.equal(JSON.parse(hidden).unready, true, "hidden, not freed");
      assert.deepEqual(await query(address, "query", "web"), []);
      process.kill(again.pid, "SIGUSR2");
      await svc.line(/"event":"listening"/);
      await svc.line(/is up on/, "stderr");
      assert.equal(await fetchBody(again.port), "beep boop\r\n");
      const where = `127.0.0.1:${first.port}`;
      assert.deepEqual(await query(address, "query", "web"), [where]);
      first = again;
    });

    await t.test("SIGTERM stops COMMAND and frees the registration", async () => {
      svc.signal("SIGTERM");
      const { input: stopped } = await svc.line(/"event":"stop"/);
      assert.equal(JSON.parse(stopped).pid, first.pid);
      assert.equal((await within(svc.closed, WAIT, "service exit")).code, 0);
      const { input: hiding } = await watch.line(/"type":"free"/);
      assert.equal(JSON.parse(hiding).unready, true, "hidden at the signal");
      const { input: event } = await watch.line(/"type":"free"/);
      assert.equal(JSON.parse(event).record.port, first.port);
      assert.equal(JSON.parse(event).unready, undefined, "then freed");
      assert.deepEqual(await query(address, "query", "web"), []);
      watch.signal("SIGINT");
      assert.equal((await within(watch.closed, WAIT, "watch exit")).code, 0);
    });
  });

  await t.test("register (verb first) works; a second signal kills COMMAND", async () => {
    const free = await closedPort();
    await using server = start(cli, [
      "listen",
      "0",
      "--range",
      `${free}-${free}`,
    ]);
    const [, serverPort] = await server.line(/listening on :(\d+)/);
    const address = `127.0.0.1:${serverPort}`;
    await using svc = start(cli, [
      "register",
      address,
      "api@2.0.0",
      "--",
      ...fixtureCommand,
      "--stubborn",
    ]);
    const { input: line } = await svc.line(/"event":"listening"/);
    const { port } = JSON.parse(line);
    await svc.line(/is up on/, "stderr");
    const r = await run(cli, ["query", address, "api@2"]);
    assert.equal(r.stdout, `["127.0.0.1:${port}"]\n`);
    svc.signal("SIGTERM");
    await svc.line(/"event":"ignored"/);
    svc.signal("SIGINT");
    assert.equal((await within(svc.closed, WAIT, "service exit")).code, 0);
    const after = await run(cli, ["query", address, "api@2"]);
    assert.equal(after.stdout, "[]\n");
  });

  await t.test("bad usage exits 2 with a message", async () => {
    const results = await Promise.all([
      run(cli, ["nope"]),
      run(cli, ["127.0.0.1:9", "query"]),
      run(cli, ["0", "--range", "9-1"]),
    ]);
    for (const r of results) {
      assert.equal(r.code, 2);
      assert.match(r.stderr, /^seaport: .*\nUsage: /);
    }
  });

  await t.test("an unreachable server fails within --timeout", async () => {
    const port = await closedPort();
    const args = [`127.0.0.1:${port}`, "query", "web", "--timeout", "500"];
    const r = await run(cli, args);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /cannot reach the seaport server at .* within 500 ms/,
    );
    assert.ok(r.ms < 500 + 4000, `took ${r.ms} ms`);
  });

  await t.test("--secret: right works, wrong or missing fails clearly", async () => {
    await using server = start(cli, ["0", "--secret", "s3cret"]);
    const [, serverPort] = await server.line(/listening on :(\d+)/);
    const address = `127.0.0.1:${serverPort}`;
    const [right, env, wrong, none, svc] = await Promise.all([
      run(cli, [address, "query", "web", "--secret", "s3cret"]),
      run(cli, [address, "show"], { SEAPORT_SECRET: "s3cret" }),
      run(cli, [address, "query", "web", "--secret", "nope"]),
      run(cli, [address, "show"], { SEAPORT_SECRET: "" }),
      run(cli, [
        address,
        "service",
        "web@1.0.0",
        "--secret",
        "nope",
        "--",
        ...fixtureCommand,
      ]),
    ]);
    assert.deepEqual([right.code, right.stdout], [0, "[]\n"]);
    assert.deepEqual([env.code, env.stdout], [0, "[]\n"]);
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /rejected the secret/);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /requires a secret/);
    assert.equal(svc.code, 1);
    assert.match(svc.stderr, /rejected the secret/);
    assert.doesNotMatch(svc.stdout, /"event"/, "COMMAND must not run");
  });
}

const cli = cliCommand();
test("the CLI as a subprocess", {
  ...(typeof cli === "string" ? { skip: cli } : {}),
}, async (t) => {
  await subprocessSuite(t, cli as string[]);
});

test("the single binary from `deno task compile`", async (t) => {
  if (runtime !== "deno") return skip(t, "deno compile needs Deno");
  const dir = mkdtempSync(join(tmpdir(), "seaport-compile-"));
  try {
    const binary = join(dir, "seaport");
    // One attempt with a short timeout: deno compile downloads its runtime
    // (denort) unless $DENORT_BIN names one.
    const build = spawnSync(process.execPath, [
      "compile",
      "--no-check",
      "--allow-net",
      "--allow-env",
      "--allow-run",
      "--output",
      binary,
      join(root, "cli.ts"),
    ], { cwd: root, encoding: "utf8", timeout: 20_000 });
    if (build.status !== 0) {
      // deno-lint-ignore no-control-regex
      const lines = build.stderr.replace(/\x1b\[[0-9;]*m/g, "").split("\n");
      const why = build.error?.message ??
        lines.find((l) => /dns error|error sending request/i.test(l)) ??
        lines.find((l) => /denort/i.test(l)) ??
        lines.find((l) => /error/i.test(l)) ?? `exit code ${build.status}`;
      assert.ok(!process.env.DENORT_BIN, `deno compile failed: ${why}`);
      return skip(
        t,
        `deno compile cannot get its runtime (denort) offline; set DENORT_BIN to run this test. ${why.trim()}`,
      );
    }
    await subprocessSuite(t, [binary]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
