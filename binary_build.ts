/**
 * Builds the single `seaport` binary with Bun's compiler and tests it.
 *
 * `bun build --compile cli.ts` bundles cli.ts with everything it imports
 * (semver included) and the Bun runtime into one executable that needs
 * nothing but libc. Bun comes from package.json's devDependencies
 * (`node_modules/.bin/bun`, put there by `npm install`), so building for this
 * machine works offline. For another platform Bun fetches that platform's
 * runtime once, from the npm registry (`@oven/bun-<os>-<arch>`), into
 * `~/.bun/install/cache`. Bun's bundler does not read Deno's `npm:`
 * specifiers (`npm:semver@7.8.6`), so the build maps them to the installed
 * packages with a generated tsconfig (dist/bun-tsconfig.json).
 *
 * ```sh
 * deno run --allow-all binary_build.ts            # dist/seaport, for this machine
 * deno run --allow-all binary_build.ts --release  # and dist/release/: 5 platforms, SHA256SUMS
 * deno run --allow-all binary_build.ts --release --test
 * ```
 *
 * `--test` runs tests/cli_test.ts and tests/service_test.ts with
 * `$SEAPORT_CLI` set to the binary (the
 * whole command-line suite against it) and tests/binary_test.ts (the binary
 * from an empty directory and an empty environment; with `--release`, each
 * release file's header and checksum).
 *
 * @module
 */
import { existsSync } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL(".", import.meta.url));
const BUN = join(ROOT, "node_modules", ".bin", "bun");
const BINARY = join(ROOT, "dist", "seaport");
const RELEASE = join(ROOT, "dist", "release");

/** The release matrix: Bun's `--target` and the file it is published as. */
const TARGETS: readonly { target: string; file: string }[] = [
  { target: "bun-linux-x64", file: "seaport-linux-x64" },
  { target: "bun-linux-arm64", file: "seaport-linux-arm64" },
  { target: "bun-darwin-x64", file: "seaport-darwin-x64" },
  { target: "bun-darwin-arm64", file: "seaport-darwin-arm64" },
  { target: "bun-windows-x64", file: "seaport-windows-x64.exe" },
];

const USAGE =
  "Usage: deno run --allow-all binary_build.ts [--release] [--test]";

async function main(args: string[]): Promise<number> {
  const unknown = args.find((a) => a !== "--release" && a !== "--test");
  if (unknown !== undefined) {
    console.error(`Unknown argument "${unknown}"\n${USAGE}`);
    return 2;
  }
  const summary: string[] = [];
  let ok = true;
  try {
    if (!existsSync(BUN)) {
      throw new Error(`No Bun at ${BUN}: run npm install (package.json)`);
    }
    const bun = (await run(BUN, ["--version"])).trim();
    await build([], BINARY);
    const { size } = await Deno.stat(BINARY);
    summary.push(`✓ built dist/seaport with Bun ${bun}: ${mib(size)}`);
    if (args.includes("--release")) await release(summary);
    if (args.includes("--test")) ok = await test(args, summary);
  } catch (err) {
    ok = false;
    summary.push(`✗ ${err instanceof Error ? err.message : String(err)}`);
  }
  console.log(`\nbinary build summary:\n  ${summary.join("\n  ")}`);
  console.log(ok ? "binary build passed" : "binary build FAILED");
  return ok ? 0 : 1;
}

/** `bun build --compile cli.ts` with `flags`, into `outfile`. */
async function build(flags: string[], outfile: string): Promise<void> {
  await mkdir(join(outfile, ".."), { recursive: true });
  await run(BUN, [
    "build",
    "--compile",
    `--tsconfig-override=${await npmPaths()}`,
    ...flags,
    join(ROOT, "cli.ts"),
    "--outfile",
    outfile,
  ]);
}

/**
 * A tsconfig that maps the sources' Deno `npm:` specifiers (deno.json's
 * imports, such as `npm:semver@7.8.6`) to the packages npm installed, which
 * Bun's bundler does not resolve by itself; returns its path (in dist/).
 */
async function npmPaths(): Promise<string> {
  const deno = JSON.parse(await Deno.readTextFile(join(ROOT, "deno.json")));
  const paths: Record<string, string[]> = {};
  for (const spec of Object.values(deno.imports ?? {}) as string[]) {
    const m = /^npm:((?:@[^/@]+\/)?[^/@]+)@/.exec(spec);
    if (m === null) continue;
    const dir = join(ROOT, "node_modules", m[1]!);
    const pkg = JSON.parse(await Deno.readTextFile(join(dir, "package.json")));
    paths[spec] = [join(dir, pkg.main ?? "index.js")];
  }
  const file = join(ROOT, "dist", "bun-tsconfig.json");
  await mkdir(join(ROOT, "dist"), { recursive: true });
  await Deno.writeTextFile(
    file,
    JSON.stringify({ compilerOptions: { paths } }, null, 2) + "\n",
  );
  return file;
}

/** Builds every target into dist/release/ and writes SHA256SUMS. */
async function release(summary: string[]): Promise<void> {
  await rm(RELEASE, { recursive: true, force: true });
  const sums: string[] = [];
  for (const { target, file } of TARGETS) {
    const out = join(RELEASE, file);
    await build([`--target=${target}`], out);
    const bytes = await Deno.readFile(out);
    const digest = await crypto.subtle.digest("SHA-256", bytes);
    const hex = [...new Uint8Array(digest)]
      .map((b) => b.toString(16).padStart(2, "0")).join("");
    sums.push(`${hex}  ${file}\n`);
    summary.push(
      `✓ built dist/release/${file} (${target}): ${mib(bytes.length)}`,
    );
  }
  await Deno.writeTextFile(join(RELEASE, "SHA256SUMS"), sums.sort().join(""));
  summary.push("✓ wrote dist/release/SHA256SUMS");
}

/** Runs the CLI suite and the binary's own tests against the build. */
async function test(args: string[], summary: string[]): Promise<boolean> {
  const env: Record<string, string> = {
    SEAPORT_CLI: JSON.stringify([BINARY]),
    SEAPORT_BINARY: BINARY,
  };
  if (args.includes("--release")) env.SEAPORT_RELEASE = RELEASE;
  const files = [
    "tests/cli_test.ts",
    "tests/service_test.ts",
    "tests/binary_test.ts",
  ];
  console.log(`\nTesting dist/seaport: ${files.join(", ")}`);
  const child = new Deno.Command(Deno.execPath(), {
    args: ["test", "--allow-all", ...files],
    cwd: ROOT,
    env,
    stdout: "piped",
  }).spawn();
  let text = "";
  const decoder = new TextDecoder();
  for await (const chunk of child.stdout) { // shown as it comes, and kept
    await Deno.stdout.write(chunk);
    text += decoder.decode(chunk, { stream: true });
  }
  const { code } = await child.status;
  // deno-lint-ignore no-control-regex
  const plain = text.replace(/\x1b\[[0-9;]*m/g, "");
  const counts = /^(?:ok|FAILED) \| (.*)$/m.exec(plain)?.[1] ?? "no counts";
  const ok = code === 0;
  const exit = ok ? "" : `; exit code ${code}`;
  summary.push(`${ok ? "✓" : "✗"} deno test against it: ${counts}${exit}`);
  return ok;
}

function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

/** Runs a command, inheriting stderr; returns stdout; throws on failure. */
async function run(cmd: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, {
    args,
    cwd: ROOT,
    stderr: "inherit",
  })
    .output();
  const stdout = new TextDecoder().decode(out.stdout);
  if (out.success) return stdout;
  console.log(stdout);
  throw new Error(`"bun ${args.join(" ")}" failed with exit code ${out.code}`);
}

if (import.meta.main) Deno.exit(await main(Deno.args));
