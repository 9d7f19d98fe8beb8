/**
 * The command line for people: `show` as a table at a terminal and JSON when
 * piped, `query --records`, `get`, `assume` and `free`, TLS and
 * `--secret-file`, `watch` across a server restart, shell completion, and
 * the help texts. In-process through `main()` where that suffices, as real
 * subprocesses otherwise.
 *
 * @module
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { main } from "../cli.ts";
import { connect, createServer } from "../mod.ts";
import {
  freePort,
  makeCertificate,
  poll,
  testStore,
  testStoreArgs,
  until,
  within,
} from "./_helpers.ts";
import { nodeTransport } from "../transport.ts";
import {
  capture,
  cliCommand,
  closedPort,
  run,
  skip,
  start,
  WAIT,
} from "./_cli.ts";

/** A server in this process with two services in two environments. */
async function populated() {
  const server = createServer(testStore());
  const { port } = await server.listen(0, "127.0.0.1");
  const address = `127.0.0.1:${port}`;
  const a = connect(address, { probe: false });
  const b = connect(address, { probe: false, env: "prod" });
  await a.assume("web@1.2.3", { port: 8080, zone: "eu" });
  await a.assume("web@2.0.0", 8081);
  await b.assume("db@5.1.0", 5432);
  return {
    address,
    async [Symbol.asyncDispose]() {
      await a.close();
      await b.close();
      await server.close();
    },
  };
}

test("show prints an aligned table at a terminal and JSON when piped or with --json", async () => {
  await using reg = await populated();
  const tty = capture();
  tty.io.tty = true;
  assert.equal(await main([reg.address, "show"], tty.io), 0, tty.err());
  const lines = tty.out().trimEnd().split("\n");
  assert.match(lines[0]!, /^ROLE\s+VERSION\s+ADDRESS\s+ENV\s+UP\s+METADATA$/);
  assert.equal(lines.length, 4);
  assert.match(lines[1]!, /^db\s+5\.1\.0\s+127\.0\.0\.1:5432\s+prod\s+\d+s$/);
  assert.match(lines[2]!, /^web\s+2\.0\.0\s+127\.0\.0\.1:8081\s+-\s+\d+s$/);
  assert.match(
    lines[3]!,
    /^web\s+1\.2\.3\s+127\.0\.0\.1:8080\s+-\s+\d+s\s+zone=eu$/,
  );
  const column = (line: string, word: string) => line.indexOf(word);
  assert.equal(column(lines[0]!, "ADDRESS"), column(lines[3]!, "127.0.0.1"));
  assert.equal(
    column(lines[0]!, "UP"),
    column(lines[1]!, lines[1]!.match(/\d+s/)![0]),
  );

  const piped = capture();
  assert.equal(await main([reg.address, "show"], piped.io), 0);
  const records = JSON.parse(piped.out());
  assert.deepEqual(records.map((r: { port: number }) => r.port), [
    5432,
    8081,
    8080,
  ]);
  assert.equal(typeof records[0].since, "number");

  const json = capture();
  json.io.tty = true;
  assert.equal(
    await main([reg.address, "show", "--json", "web@1.x"], json.io),
    0,
  );
  assert.deepEqual(
    JSON.parse(json.out()).map((r: { port: number }) => r.port),
    [8080],
  );

  const env = capture();
  assert.equal(await main([reg.address, "show", "--env", "prod"], env.io), 0);
  assert.deepEqual(JSON.parse(env.out()).map((r: { role: string }) => r.role), [
    "db",
  ]);

  const empty = capture();
  empty.io.tty = true;
  assert.equal(await main([reg.address, "show", "nothing"], empty.io), 0);
  assert.equal(empty.out(), "no services registered\n");
});

test("query prints host:port strings, or whole records with --records, in one environment or all", async () => {
  await using reg = await populated();
  const plain = capture();
  assert.equal(await main([reg.address, "query", "web"], plain.io), 0);
  assert.deepEqual(JSON.parse(plain.out()).sort(), [
    "127.0.0.1:8080",
    "127.0.0.1:8081",
  ]);
  const records = capture();
  assert.equal(
    await main([reg.address, "query", "web@^1", "--records"], records.io),
    0,
  );
  const [r] = JSON.parse(records.out());
  assert.equal(r.zone, "eu");
  const none = capture();
  assert.equal(await main([reg.address, "query", "db"], none.io), 0);
  assert.equal(none.out(), "[]\n");
  const all = capture();
  assert.equal(
    await main([reg.address, "query", "db", "--all-envs"], all.io),
    0,
  );
  assert.equal(all.out(), '["127.0.0.1:5432"]\n');
});

test("get waits for the first match, and exits 1 when --timeout runs out", async () => {
  await using reg = await populated();
  const waiting = capture();
  const got = main([reg.address, "get", "cache@3"], waiting.io);
  const late = connect(reg.address, { probe: false });
  try {
    await late.query(); // give get a moment to be waiting
    await late.assume("cache@3.0.1", 6379);
    assert.equal(await within(got, WAIT, "get"), 0, waiting.err());
    assert.equal(waiting.out(), '["127.0.0.1:6379"]\n');
  } finally {
    await late.close();
  }
  const timeout = capture();
  const started = Date.now();
  assert.equal(
    await main([reg.address, "get", "nope", "--timeout", "200"], timeout.io),
    1,
  );
  assert.ok(Date.now() - started < 3000);
  assert.match(
    timeout.err(),
    /^seaport: no service matched "nope" within 200 ms\n$/,
  );
});

test("an assume whose port an operator frees says so and ends with 1, the port not taken back", async () => {
  await using reg = await populated();
  const held = capture();
  const assuming = main(
    [reg.address, "assume", "redis@7.2.0", "6391"],
    held.io,
  );
  const check = connect(reg.address);
  try {
    await within(check.get("redis"), WAIT, "the assumed service");
    await until(
      () => /until this command stops/.test(held.err()),
      "the assume message",
      WAIT,
    );
    const freed = capture();
    assert.equal(
      await main([reg.address, "free", "127.0.0.1:6391"], freed.io),
      0,
      freed.err(),
    );
    assert.equal(await within(assuming, WAIT, "assume to end"), 1);
    assert.match(
      held.err(),
      /seaport: redis@7\.2\.0 lost port 6391: an operator freed it\n/,
    );
    assert.deepEqual(await check.query("redis"), [], "not taken back");
  } finally {
    await check.close();
  }
});

test("assume registers a running service until stopped, and free takes any registration away", async () => {
  await using reg = await populated();
  const stop = new AbortController();
  const held = capture({}, stop.signal);
  const assuming = main([
    reg.address,
    "assume",
    "redis@7.2.0",
    "6390",
    "--meta.zone=us",
  ], held.io);
  const check = connect(reg.address);
  try {
    const [r] = await within(check.get("redis"), WAIT, "the assumed service");
    assert.equal(r!.port, 6390);
    assert.equal(r!.zone, "us");
    // Another client may see it before the command has its answer (on etcd,
    // the view wakes the get before the reply is written).
    await until(
      () => /until this command stops/.test(held.err()),
      "the assume message",
      WAIT,
    );
    assert.match(
      held.err(),
      /redis@7\.2\.0 is registered at 127\.0\.0\.1:6390 until this command stops/,
    );
    stop.abort();
    assert.equal(await within(assuming, WAIT, "assume to stop"), 0);
    // Freed once the server sees the connection end (on etcd: one write).
    await poll(
      async () => (await check.query("redis")).length === 0,
      "redis freed",
      WAIT,
    );

    const freed = capture();
    assert.equal(
      await main([reg.address, "free", "127.0.0.1:8081"], freed.io),
      0,
      freed.err(),
    );
    assert.equal(freed.out(), "freed web@2.0.0 at 127.0.0.1:8081\n");
    const byPort = capture();
    assert.equal(
      await main([reg.address, "free", "8080"], byPort.io),
      0,
      byPort.err(),
    );
    assert.deepEqual(await check.query("web"), []);
    const missing = capture();
    assert.equal(
      await main([reg.address, "free", "127.0.0.1:8081"], missing.io),
      1,
    );
    assert.match(missing.err(), /no registration holds it/);
  } finally {
    await check.close();
  }
});

test("--secret-file reads the secret; both --secret and --secret-file is bad usage", async () => {
  const server = createServer({ ...testStore(), secret: "from a file" });
  const { port } = await server.listen(0, "127.0.0.1");
  const dir = mkdtempSync(join(tmpdir(), "seaport-secret-"));
  try {
    const file = join(dir, "secret");
    writeFileSync(file, "from a file\n");
    const ok = capture();
    assert.equal(
      await main(
        [`127.0.0.1:${port}`, "query", "web", "--secret-file", file],
        ok.io,
      ),
      0,
      ok.err(),
    );
    const both = capture();
    const args = [
      `127.0.0.1:${port}`,
      "show",
      "--secret",
      "x",
      "--secret-file",
      file,
    ];
    assert.equal(await main(args, both.io), 2);
    assert.match(both.err(), /--secret or --secret-file, not both/);
    const missing = capture();
    assert.equal(
      await main([
        `127.0.0.1:${port}`,
        "show",
        "--secret-file",
        join(dir, "nope"),
      ], missing.io),
      1,
    );
    assert.match(missing.err(), /Cannot read --secret-file/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    await server.close();
  }
});

test("TLS on the command line: --cert/--key serve it, --ca trusts it", async (t) => {
  const made = makeCertificate("IP:127.0.0.1,DNS:localhost");
  if (typeof made === "string") return skip(t, made);
  const dir = mkdtempSync(join(tmpdir(), "seaport-cli-tls-"));
  const stop = new AbortController();
  try {
    writeFileSync(join(dir, "cert.pem"), made.cert);
    writeFileSync(join(dir, "key.pem"), made.key);
    const server = capture({}, stop.signal);
    const serving = main([
      "0",
      "--host",
      "127.0.0.1",
      "--cert",
      join(dir, "cert.pem"),
      "--key",
      join(dir, "key.pem"),
      ...testStoreArgs(),
    ], server.io);
    const [, port] = await server.line(
      /listening on 127\.0\.0\.1:(\d+) \(TLS\)/,
    );
    const address = `127.0.0.1:${port}`;
    const ok = capture();
    assert.equal(
      await main(
        [address, "query", "web", "--ca", join(dir, "cert.pem")],
        ok.io,
      ),
      0,
      ok.err(),
    );
    assert.equal(ok.out(), "[]\n");
    const plain = capture();
    assert.equal(
      await main([address, "query", "web", "--timeout", "500"], plain.io),
      1,
    );
    const untrusted = capture();
    assert.equal(
      await main(
        [address, "query", "web", "--tls", "--timeout", "500"],
        untrusted.io,
      ),
      1,
    );
    assert.match(untrusted.err(), /cannot reach the seaport server/);
    const half = capture();
    assert.equal(
      await main(["0", "--cert", join(dir, "cert.pem")], half.io),
      2,
    );
    assert.match(half.err(), /--cert and --key go together/);
    stop.abort();
    assert.equal(await within(serving, WAIT, "the server to stop"), 0);
  } finally {
    stop.abort();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("watch lines carry a timestamp; after a server restart watch says what changed while it was away", async (t) => {
  const cli = cliCommand();
  if (typeof cli === "string") return skip(t, cli);
  const port = await freePort(nodeTransport());
  const address = `127.0.0.1:${port}`;
  const store = testStore();
  let server = createServer(store);
  await server.listen(port, "127.0.0.1");
  const fast = { reconnectDelay: 20, maxReconnectDelay: 100, probe: false };
  const kept = connect(address, fast);
  const gone = connect(address, fast);
  try {
    await kept.service("web@1.0.0");
    await gone.allocate("tmp@1.0.0"); // not re-asserted: lost with the server
    await using watch = start(cli, [address, "watch"]);
    await watch.line(
      /^seaport: watching .* \(the default environment\)$/,
      "stderr",
    );
    await gone.close();
    await server.close();
    await watch.line(
      /cannot reach the seaport server at .*; retrying/,
      "stderr",
    );
    server = createServer(store);
    await server.listen(port, "127.0.0.1");
    const { input: marker } = await watch.line(/"type":"resync"/);
    const resync = JSON.parse(marker);
    assert.ok(!Number.isNaN(Date.parse(resync.time)), resync.time);
    // web may or may not be back yet when watch resynchronises
    assert.ok(resync.changes >= 1, marker);
    const changes: { type: string; record: { role: string } }[] = [];
    for (let i = 0; i < resync.changes; i++) {
      const { input } = await watch.line(/"resync":true/);
      changes.push(JSON.parse(input));
    }
    const freed = changes.filter((c) => c.type === "free").map((c) =>
      c.record.role
    );
    assert.ok(freed.includes("tmp"), JSON.stringify(changes));
    if (freed.includes("web")) {
      // watch came back before web was re-asserted: then it sees web return
      await watch.line(/"type":"(assume|allocate)".*"role":"web"/);
    }
    await watch.line(/connected to .* again/, "stderr");
    await within(kept.get("web"), WAIT, "web back");
    watch.signal("SIGINT");
    assert.equal((await within(watch.closed, WAIT, "watch exit")).code, 0);
  } finally {
    await kept.close();
    await gone.close();
    await server.close();
  }
});

test("watch prints text at a terminal and follows --env and --all-envs", async () => {
  await using reg = await populated();
  const stop = new AbortController();
  const own = capture({}, stop.signal);
  own.io.tty = true;
  const all = capture({}, stop.signal);
  const watching = [
    main([reg.address, "watch"], own.io),
    main([reg.address, "watch", "--all-envs"], all.io),
  ];
  const c = connect(reg.address, { probe: false, env: "prod" });
  const d = connect(reg.address, { probe: false });
  try {
    await within(
      new Promise<void>((resolve) => {
        const check = () =>
          own.err().includes("watching") && all.err().includes("watching")
            ? resolve()
            : setTimeout(check, 5);
        check();
      }),
      WAIT,
      "both watches",
    );
    await c.assume("api@1.0.0", 9000);
    await d.assume("ui@1.0.0", 9001);
    await all.line(/"ui"/);
    await own.line(/ui@1\.0\.0/);
    assert.match(
      own.out(),
      /^\d{4}-\d\d-\d\dT[\d:.]+Z assume\s+ui@1\.0\.0 127\.0\.0\.1:9001\n$/,
    );
    assert.match(all.out(), /"api"/);
  } finally {
    stop.abort();
    await Promise.all(watching);
    await c.close();
    await d.close();
  }
});

test("seaport completion bash completes commands and each command's options", async (t) => {
  const script = capture();
  assert.equal(await main(["completion", "bash"], script.io), 0);
  assert.match(script.out(), /complete -F _seaport seaport/);
  const zsh = capture();
  assert.equal(await main(["completion", "zsh"], zsh.io), 0);
  assert.match(zsh.out(), /^#compdef seaport/);
  const bad = capture();
  assert.equal(await main(["completion", "fish"], bad.io), 2);
  if (spawnSync("bash", ["--version"]).status !== 0) return skip(t, "no bash");
  const complete = (words: string[]) => {
    const r = spawnSync("bash", [
      "-c",
      `${script.out()}
COMP_WORDS=(${words.map((w) => `'${w}'`).join(" ")}); COMP_CWORD=${
        words.length - 1
      }; _seaport; echo "\${COMPREPLY[*]}"`,
    ], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    return r.stdout.trim().split(" ");
  };
  assert.deepEqual(
    complete(["seaport", "localhost:9090", "service", "web", "--re"]),
    [
      "--restart",
      "--restart-window",
    ],
  );
  assert.deepEqual(
    complete(["seaport", "localhost:9090", "service", "web", "--restart", "o"]),
    [
      "on-failure",
    ],
  );
  assert.ok(complete(["seaport", "sh"]).includes("show"));
  assert.deepEqual(complete(["seaport", "completion", ""]), ["bash", "zsh"]);
});

test("help texts: an example each, show covers every environment, aligned options", async () => {
  for (
    const command of [
      "listen",
      "show",
      "query",
      "get",
      "service",
      "assume",
      "free",
      "watch",
      "completion",
    ]
  ) {
    const c = capture();
    assert.equal(await main([command, "--help"], c.io), 0);
    assert.match(c.out(), /\nExamples:\n {2}\S/, command);
    const columns = new Set(
      c.out().split("\n").filter((l) => /^ {2}--\S/.test(l)).map((l) =>
        l.search(/\S/u) + l.slice(2).search(/ {2,}\S/) +
        l.slice(2).match(/ {2,}/)![0].length + 2
      ),
    );
    assert.ok(
      columns.size <= 1,
      `${command}: options misaligned ${[...columns]}`,
    );
  }
  const show = capture();
  await main(["show", "--help"], show.io);
  assert.match(show.out(), /every registration of every\s+environment/);
});

test("unknown options are named, even when followed by a value", async () => {
  const c = capture();
  assert.equal(await main(["0", "--bogus", "value"], c.io), 2);
  assert.match(c.err(), /^seaport: Unknown option "--bogus"/);
});

test("an unreachable server: show, query and get fail with one wording", async () => {
  const port = await closedPort();
  const address = `127.0.0.1:${port}`;
  for (const args of [["show"], ["query", "web"], ["free", "1"]]) {
    const c = capture();
    assert.equal(await main([address, ...args, "--timeout", "200"], c.io), 1);
    assert.match(
      c.err(),
      new RegExp(
        `^seaport: cannot reach the seaport server at 127\\.0\\.0\\.1:${port} within 200 ms`,
      ),
    );
  }
  const g = capture();
  assert.equal(
    await main([address, "get", "web", "--timeout", "300"], g.io),
    1,
  );
  assert.match(
    g.err(),
    /no service matched "web" within 300 ms \(cannot reach the seaport server at/,
  );
});

test("show at a real pseudo-terminal prints the table", async (t) => {
  const cli = cliCommand();
  if (typeof cli === "string") return skip(t, cli);
  if (
    process.platform !== "linux" ||
    spawnSync("script", ["--version"]).status !== 0
  ) {
    return skip(t, "needs util-linux script(1) for a pseudo-terminal");
  }
  await using reg = await populated();
  const line = [...cli, reg.address, "show"].map((w) => `'${w}'`).join(" ");
  const r = await run(["script", "-qec", line, "/dev/null"], []);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /ROLE\s+VERSION\s+ADDRESS/);
  assert.match(r.stdout, /web\s+1\.2\.3\s+127\.0\.0\.1:8080/);
});
