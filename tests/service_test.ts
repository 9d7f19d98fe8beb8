/**
 * `seaport service` as a real subprocess: a supervised command that is down
 * is never listed, health checks, restart policies, a stubborn command,
 * a killed supervisor, and the start-up timeout. The registry is watched
 * through the library, from this process.
 *
 * @module
 */
import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import {
  existsSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { connect as netConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { connect, createServer, type ServiceRecord } from "../mod.ts";
import {
  freeBlock,
  poll,
  testEtcd,
  testStore,
  until,
  within,
} from "./_helpers.ts";
import { nodeTransport } from "../transport.ts";
import {
  cliCommand,
  closedPort,
  fixtureCommand,
  run,
  skip,
  start,
  WAIT,
} from "./_cli.ts";

/** A server in this process and a watching client that records events. */
async function registry(range?: [number, number]) {
  // A block of ports of its own: other processes on this machine (another
  // test run, say) may hold ports of the default range.
  if (range === undefined) {
    const base = await freeBlock(nodeTransport(), 8);
    range = [base, base + 7];
  }
  const server = createServer({ ...testStore(), range: { "*": range } });
  const { port } = await server.listen(0, "127.0.0.1");
  const ports = connect("127.0.0.1", port);
  const events: { type: string; port: number; unready: boolean; at: number }[] =
    [];
  for (const type of ["allocate", "assume", "free"] as const) {
    ports.on(
      type,
      (r: ServiceRecord, unready: boolean) =>
        events.push({ type, port: r.port, unready, at: Date.now() }),
    );
  }
  await ports.query();
  return {
    server,
    ports,
    address: `127.0.0.1:${port}`,
    events,
    /** Waits for the next event of `type` (from `from` on in the list). */
    async event(type: string, unready: boolean, from = 0) {
      await until(
        () =>
          events.slice(from).some((e) =>
            e.type === type && e.unready === unready
          ),
        `a ${type}${unready ? " (not ready)" : ""} event`,
        WAIT,
      );
      return events.slice(from).find((e) =>
        e.type === type && e.unready === unready
      )!;
    },
    async [Symbol.asyncDispose]() {
      await ports.close();
      await server.close();
    },
  };
}

/** Whether a TCP connection to loopback `port` is accepted. */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = netConnect({ host: "127.0.0.1", port });
    s.once("connect", () => (s.destroy(), resolve(true)));
    s.once("error", () => (s.destroy(), resolve(false)));
  });
}

/** Whether a process runs (a zombie nobody reaps counts as gone). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return !/^\d+ \(.*\) [ZX]/.test(stat);
  } catch {
    return process.platform !== "linux";
  }
}

async function suite(t: TestContext, cli: string[]) {
  const fast = ["--check-interval", "100", "--check-timeout", "200"];

  await t.test("a killed command is hidden at once, and listed again once it accepts", async () => {
    await using reg = await registry();
    await using svc = start(cli, [
      reg.address,
      "service",
      "web@1.0.0",
      "--",
      ...fixtureCommand,
    ]);
    const { input } = await svc.line(/"event":"listening"/);
    const first = JSON.parse(input);
    await reg.event("allocate", false);
    const n = reg.events.length;
    const killed = Date.now();
    process.kill(first.pid, "SIGKILL");
    await svc.line(/is not ready: it exited with signal SIGKILL/, "stderr");
    const down = await reg.event("free", true, n);
    console.log(
      `service: hidden ${down.at - killed} ms after kill -9 of its command`,
    );
    assert.deepEqual(await reg.ports.query("web"), [], "not listed while down");
    const { input: again } = await svc.line(/"event":"listening"/);
    assert.equal(JSON.parse(again).port, first.port, "the same port");
    const up = await reg.event("allocate", false, n);
    assert.ok(up.at >= down.at);
    const [r] = await reg.ports.query("web");
    assert.equal(r!.port, first.port);
    assert.ok(await accepts(r!.port));
  });

  await t.test("a service whose port an operator frees stops its command and ends with 1, its port not taken back", async () => {
    await using reg = await registry();
    await using svc = start(cli, [
      reg.address,
      "service",
      "web@1.0.0",
      "--",
      ...fixtureCommand,
    ]);
    const { input } = await svc.line(/"event":"listening"/);
    const { pid, port } = JSON.parse(input);
    await reg.event("allocate", false);
    await reg.ports.evict("127.0.0.1", port);
    await svc.line(
      new RegExp(`web@1.0.0 lost port ${port}: an operator freed it`),
      "stderr",
    );
    const { code } = await within(svc.closed, WAIT, "service to end");
    assert.equal(code, 1);
    await until(() => !alive(pid), "its command gone", WAIT);
    assert.deepEqual(await reg.ports.query("web"), [], "not taken back");
  });

  await t.test("a crash-looping command is never listed while nothing listens", async () => {
    await using reg = await registry();
    await using svc = start(cli, [
      reg.address,
      "service",
      "web@1.0.0",
      "--",
      ...fixtureCommand,
      "--crash-after",
      "150",
    ]);
    await reg.event("allocate", false);
    // Poll for 3 s (several crashes and restarts with growing backoff): every
    // answer is connected to. A listed endpoint that refuses connections is
    // only allowed in the moment between the crash and the supervisor seeing
    // it: a run of such answers must end within 100 ms.
    const deadline = Date.now() + 3000;
    let staleSince: number | undefined;
    let longest = 0;
    let answers = 0;
    let refused = 0;
    while (Date.now() < deadline) {
      const found = await reg.ports.query("web");
      answers += found.length;
      const ok = found.length === 0 || await accepts(found[0]!.port);
      if (!ok) {
        refused++;
        staleSince ??= Date.now();
        longest = Math.max(longest, Date.now() - staleSince);
      } else staleSince = undefined;
    }
    const crashes = svc.text("stderr").match(/exited with code 1/g)?.length ??
      0;
    console.log(
      `service: ${crashes} crashes in 3 s; longest listing with nothing behind it ${longest} ms (${refused} of ${answers} answers refused)`,
    );
    assert.ok(crashes >= 3, `only ${crashes} crashes in 3 s`);
    assert.ok(answers > 0, "it was listed while up");
    // On etcd, hiding it is one etcd write (an fsync on etcd's disk, which
    // other work on a busy machine can hold up).
    const bound = testEtcd === undefined ? 100 : 600;
    assert.ok(
      longest <= bound,
      `listed while dead for ${longest} ms (${refused} refused answers)`,
    );
  });

  await t.test("a command that fails its TCP check is hidden, and listed again once it passes", async () => {
    await using reg = await registry();
    await using svc = start(cli, [
      reg.address,
      "service",
      "web@1.0.0",
      ...fast,
      "--",
      ...fixtureCommand,
      "--sick-closes",
    ]);
    const { input } = await svc.line(/"event":"listening"/);
    const { pid } = JSON.parse(input);
    await reg.event("allocate", false);
    const n = reg.events.length;
    const sick = Date.now();
    process.kill(pid, "SIGUSR1");
    await reg.event("free", true, n);
    console.log(
      `service: hidden ${
        Date.now() - sick
      } ms after its command stopped accepting (checks every 100 ms, 2 failures, 200 ms timeout)`,
    );
    // interval × failures + timeout, with room for a loaded machine
    assert.ok(
      Date.now() - sick < 100 * 2 + 200 + 1500,
      `${Date.now() - sick} ms`,
    );
    await svc.line(/failed its health check 2 times in a row/, "stderr");
    assert.deepEqual(await reg.ports.query("web"), []);
    process.kill(pid, "SIGUSR1");
    await reg.event("allocate", false, n);
    await svc.line(/the health check passes again/, "stderr");
    assert.equal((await reg.ports.query("web")).length, 1);
  });

  await t.test("--check-http and --check-cmd decide readiness", async () => {
    await using reg = await registry();
    await using http = start(cli, [
      reg.address,
      "service",
      "api@1.0.0",
      ...fast,
      "--check-http",
      "/healthz",
      "--",
      ...fixtureCommand,
    ]);
    const { input } = await http.line(/"event":"listening"/);
    const { pid } = JSON.parse(input);
    await reg.event("allocate", false);
    const n = reg.events.length;
    process.kill(pid, "SIGUSR1"); // /healthz answers 503; the port still accepts
    await reg.event("free", true, n);
    await http.line(/GET \/healthz: HTTP 503/, "stderr");
    process.kill(pid, "SIGUSR1");
    await reg.event("allocate", false, n);

    const dir = mkdtempSync(join(tmpdir(), "seaport-check-"));
    try {
      const flag = join(dir, "healthy");
      writeFileSync(flag, "");
      const m = reg.events.length;
      await using cmd = start(cli, [
        reg.address,
        "service",
        "db@1.0.0",
        ...fast,
        "--check-cmd",
        `test -e '${flag}'`,
        "--",
        ...fixtureCommand,
      ]);
      await cmd.line(/is up on/, "stderr");
      const k = reg.events.length;
      assert.ok(k > m);
      rmSync(flag);
      await reg.event("free", true, k);
      await cmd.line(/exited with code 1/, "stderr");
      writeFileSync(flag, "");
      await reg.event("allocate", false, k + 1);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  await t.test("--restart never and on-failure end with the command's exit code", async () => {
    await using reg = await registry();
    const never = await run(cli, [
      reg.address,
      "service",
      "web@1.0.0",
      "--restart",
      "never",
      "--",
      ...fixtureCommand,
      "--exit-with",
      "3",
    ]);
    assert.equal(never.code, 3, never.stderr);
    assert.match(never.stderr, /not restarting \(--restart never\)/);
    const clean = await run(cli, [
      reg.address,
      "service",
      "web@1.0.0",
      "--restart",
      "on-failure",
      "--",
      ...fixtureCommand,
      "--exit-with",
      "0",
    ]);
    assert.equal(clean.code, 0, clean.stderr);
    const giveUp = await run(cli, [
      reg.address,
      "service",
      "web@1.0.0",
      "--restart",
      "on-failure",
      "--max-restarts",
      "2",
      "--",
      ...fixtureCommand,
      "--exit-with",
      "1",
    ]);
    assert.equal(giveUp.code, 1, giveUp.stderr);
    assert.match(
      giveUp.stderr,
      /exited 3 times within 60000 ms \(--max-restarts 2\); giving up/,
    );
    assert.equal(giveUp.stderr.match(/restarting in/g)?.length, 2);
    assert.equal(reg.server.query().length, 0, "nothing left registered");
  });

  await t.test("a command that ignores SIGTERM is hidden at once and its port freed only once it exits", async () => {
    const only = await closedPort();
    await using reg = await registry([only, only]);
    await using svc = start(cli, [
      reg.address,
      "service",
      "web@1.0.0",
      "--grace",
      "700",
      "--",
      ...fixtureCommand,
      "--stubborn",
    ]);
    const { input } = await svc.line(/"event":"listening"/);
    const { pid } = JSON.parse(input);
    await reg.event("allocate", false);
    const n = reg.events.length;
    svc.signal("SIGTERM");
    await svc.line(/"event":"ignored"/);
    await svc.line(/SIGTERM again kills it now/, "stderr");
    await reg.event("free", true, n);
    assert.equal(reg.server.query("web").length, 0, "hidden");
    assert.ok(alive(pid));
    const other = connect(reg.address, { probe: false });
    try {
      await assert.rejects(
        other.allocate("db@1.0.0", () => {}),
        /range .* is exhausted/,
        "the port is still held while the command runs",
      );
      const stopped = Date.now();
      await svc.line(/did not exit within 700 ms; killing it/, "stderr");
      assert.equal((await within(svc.closed, WAIT, "service exit")).code, 0);
      assert.ok(!alive(pid));
      assert.ok(Date.now() - stopped >= 500, "freed after the grace period");
      // Freed once the server sees the supervisor's connection end (on
      // etcd: one write later), so ask until then.
      let got: number | undefined;
      await poll(
        async () => {
          got = await other.allocate("db@1.0.0", () => {}).catch(() =>
            undefined
          );
          return got !== undefined;
        },
        "the port freed",
        WAIT,
      );
      assert.equal(got, only);
    } finally {
      await other.close();
    }
  });

  await t.test("a supervisor killed with SIGKILL leaves no registration and, on Linux, no command", async (t) => {
    await using reg = await registry();
    await using svc = start(cli, [
      reg.address,
      "service",
      "web@1.0.0",
      "--",
      ...fixtureCommand,
    ]);
    const { input } = await svc.line(/"event":"listening"/);
    const { pid } = JSON.parse(input);
    await reg.event("allocate", false);
    process.kill(svc.child.pid!, "SIGKILL");
    await reg.event("free", false);
    if (process.platform !== "linux" || !existsSync("/usr/bin/setpriv")) {
      process.kill(pid, "SIGKILL");
      return skip(
        t,
        "the command is told of its supervisor's death only on Linux with setpriv",
      );
    }
    await until(() => !alive(pid), "the command to stop", WAIT);
  });

  await t.test("--timeout bounds the start-up; without it, service says every 5 s what it waits for", async () => {
    const port = await closedPort();
    const address = `127.0.0.1:${port}`;
    const bounded = await run(cli, [
      address,
      "service",
      "web@1.0.0",
      "--timeout",
      "400",
      "--",
      ...fixtureCommand,
    ]);
    assert.equal(bounded.code, 1);
    assert.match(
      bounded.stderr,
      /cannot reach the seaport server at .* within 400 ms/,
    );
    assert.doesNotMatch(bounded.stdout, /"event"/, "the command must not run");
    await using waiting = start(cli, [
      address,
      "service",
      "web@1.0.0",
      "--",
      ...fixtureCommand,
    ]);
    await waiting.line(
      /cannot reach the seaport server at .*; still trying after 5 s/,
      "stderr",
    );
    waiting.signal("SIGTERM");
    assert.equal((await within(waiting.closed, WAIT, "exit")).code, 0);
  });
}

const cli = cliCommand();
test("seaport service", {
  ...(typeof cli === "string" ? { skip: cli } : {}),
  ...(process.platform === "win32" ? { skip: "POSIX signals" } : {}),
}, async (t) => {
  await suite(t, cli as string[]);
});
