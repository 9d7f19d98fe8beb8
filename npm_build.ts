/**
 * Builds the npm package `@seaport/seaport` into `npm/` and tests it under
 * Node and Bun: dnt's job, done with the TypeScript compiler from npm.
 *
 * 1. Type-checks every top-level module with the strict options of deno.json
 *    and emits ESM JavaScript and `.d.ts` files into `npm/esm/`, a `bin.js`
 *    shim for the CLI (Node 20 has no `import.meta.main`), `package.json`,
 *    README.md and LICENSE.
 * 2. Compiles `tests/*.ts` with their imports of `../mod.ts`, `../registry.ts`,
 *    … rewritten to `@seaport/seaport`, `@seaport/seaport/registry`, …, packs
 *    the package, installs the tarball into a fresh project in the OS temp
 *    directory and runs the tests there with `node --test`, then the same
 *    files with `bun test` (Bun from package.json's devDependencies). Bun's
 *    runner runs node:test files (subtests too: a failing one fails its
 *    parent, though only top-level tests are counted); it must skip exactly
 *    the tests Node skips.
 * 3. Runs the installed `seaport --version`.
 *
 * ```sh
 * deno run --allow-all npm_build.ts            # build, then test (Node, Bun)
 * deno run --allow-all npm_build.ts --no-test  # build only
 * ```
 *
 * @module
 */
import ts from "npm:typescript@6.0.3";
import { existsSync } from "node:fs";
import { cp, rm } from "node:fs/promises";
import { isBuiltin } from "node:module";
import { basename, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL(".", import.meta.url));
const OUT = join(ROOT, "npm");
const NAME = "@seaport/seaport";
/** Bun, from package.json's devDependencies. */
const BUN = join(ROOT, "node_modules", ".bin", "bun");
const DESCRIPTION = "A service registry and port assigner for clusters";
/** Modules published as subpaths, besides "." (mod.ts) and "./cli". */
const SUBPATHS = ["registry", "protocol", "transport", "errors"];
/**
 * Folders with a `mod.ts`, published as subpaths (`./store/etcd`): not in the
 * top-level mod.ts yet, but the tests under Node import them.
 */
const FOLDERS = ["store/etcd"];
/**
 * What Node 20 lacks but cli.ts guards its run with: `import.meta.main`
 * (declared for the compiler only; bin.js runs the CLI on Node).
 */
const AMBIENT = join(ROOT, "__npm_build_ambient.d.ts");
const AMBIENT_TEXT = `interface ImportMeta { readonly main?: boolean }
`;
/** `seaport` on npm: Node 20 has no `import.meta.main` to run cli.ts by. */
const BIN = `#!/usr/bin/env node
import { main } from "./cli.js";

process.exitCode = await main(process.argv.slice(2));
`;

interface DenoJson {
  version: string;
  imports?: Record<string, string>;
  compilerOptions?: Record<string, unknown>;
}
type Manifest = { devDependencies?: Record<string, string> };
type Packed = { filename: string; entryCount: number; size: number };
type Exports = Record<string, { types: string; default: string }>;

async function main(args: string[]): Promise<number> {
  const unknown = args.find((a) => a !== "--no-test");
  if (unknown !== undefined) {
    console.error(`Unknown argument "${unknown}"`);
    console.error("Usage: deno run --allow-all npm_build.ts [--no-test]");
    return 2;
  }
  const summary: string[] = [];
  let ok = true;
  try {
    const deno = await readJson<DenoJson>(join(ROOT, "deno.json"));
    const exports = await build(deno, summary);
    if (!args.includes("--no-test")) ok = await test(deno, exports, summary);
  } catch (err) {
    ok = false;
    summary.push(`✗ ${err instanceof Error ? err.message : String(err)}`);
  }
  console.log(`\nnpm build summary:\n  ${summary.join("\n  ")}`);
  console.log(ok ? "npm build passed" : "npm build FAILED");
  return ok ? 0 : 1;
}

/** Emits npm/ and returns the package's exports. */
async function build(deno: DenoJson, summary: string[]): Promise<Exports> {
  const sources = (await list(ROOT, /^\w+\.ts$/))
    .filter((f) => !f.endsWith("_test.ts") && !f.endsWith("_build.ts"));
  const hasCli = sources.includes("cli.ts");
  await rm(OUT, { recursive: true, force: true });
  const folders = FOLDERS.filter((f) => existsSync(join(ROOT, f, "mod.ts")));
  const roots = [...sources, ...folders.map((f) => join(f, "mod.ts"))];
  compile("sources", roots.map((s) => join(ROOT, s)), join(OUT, "esm"), deno, {
    before: [npmSpecifiers()],
  });
  const exports: Exports = { ".": entry("mod") };
  for (const f of folders) exports[`./${f}`] = entry(`${f}/mod`);
  if (hasCli) {
    exports["./cli"] = entry("cli");
    await Deno.writeTextFile(join(OUT, "esm", "bin.js"), BIN, { mode: 0o755 });
  }
  for (const s of SUBPATHS) exports[`./${s}`] = entry(s);
  const docs = ["README.md", "LICENSE", "PROTOCOL.md"]
    .filter((f) => existsSync(join(ROOT, f)));
  for (const f of docs) await Deno.copyFile(join(ROOT, f), join(OUT, f));
  const semver = /^npm:semver@(.+)$/.exec(deno.imports?.["semver"] ?? "")?.[1];
  if (semver === undefined) throw new Error('deno.json maps no "npm:semver"');
  await writeJson(join(OUT, "package.json"), {
    name: NAME,
    version: deno.version,
    description: DESCRIPTION,
    license: "MIT",
    type: "module",
    exports: { ...exports, "./package.json": "./package.json" },
    ...(hasCli ? { bin: { seaport: "./esm/bin.js" } } : {}),
    files: ["esm/", ...docs],
    dependencies: { semver },
    engines: { node: ">=20" },
  });
  const bin = hasCli ? "bin seaport" : "no cli.ts yet, so no bin";
  summary.push(`✓ built npm/ (${sources.length} modules, ${bin})`);
  return exports;
}

function entry(module: string) {
  return { types: `./esm/${module}.d.ts`, default: `./esm/${module}.js` };
}

/** Packs npm/, installs it into a temp project and runs the tests there. */
async function test(deno: DenoJson, exports: Exports, summary: string[]) {
  const tmp = await Deno.makeTempDir({ prefix: "seaport-npm-" });
  try {
    const project = join(tmp, "project");
    const { files, deps, unrun } = await compileTests(project, exports, deno);
    const pack = ["pack", "--json", "--loglevel=error", "--pack-destination"];
    const [tgz] = JSON.parse(await run("npm", [...pack, tmp], OUT)) as Packed[];
    if (tgz === undefined) throw new Error("npm pack made no tarball");
    const kB = (tgz.size / 1024).toFixed(1);
    summary.push(`✓ packed ${tgz.filename}: ${tgz.entryCount} files, ${kB} kB`);
    await writeJson(join(project, "package.json"), { type: "module" });
    const install = ["install", "--prefer-offline", "--no-audit", "--no-fund"];
    install.push("--loglevel=error", join(tmp, tgz.filename), ...deps);
    await run("npm", install, project);
    summary.push(`✓ installed it with ${deps.join(", ") || "no test deps"}`);
    const installed = join(project, "node_modules", NAME);
    const missing = Object.values(exports).flatMap((e) => [e.types, e.default])
      .filter((file) => !existsSync(join(installed, file)));
    if (missing.length) throw new Error(`Missing exported files: ${missing}`);
    const bin = join(project, "node_modules", ".bin", "seaport");
    const hasBin = exports["./cli"] !== undefined;
    // tests/cli_test.ts runs the CLI as a subprocess through $SEAPORT_CLI.
    const env = hasBin ? { SEAPORT_CLI: JSON.stringify([bin]) } : {};
    const node = await nodeTest(project, files, env, summary);
    const bunEnv = hasBin
      ? { SEAPORT_CLI: JSON.stringify([BUN, join(installed, "esm", "bin.js")]) }
      : {};
    const bun = await bunTest(project, files, bunEnv, node, summary);
    summary.push(...unrun.map((why) => `✗ not run under Node: ${why}`));
    const ok = node.ok && bun;
    if (hasBin) {
      const version = (await run(bin, ["--version"], project)).trim();
      summary.push(`✓ installed bin: "seaport --version" printed "${version}"`);
    }
    return ok && unrun.length === 0;
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
}

/**
 * Compiles tests/ into `project`/tests (copying fixtures and other non-.ts
 * entries); returns the test files, the packages they import and why any
 * test file cannot run from the package.
 */
async function compileTests(project: string, exports: Exports, deno: DenoJson) {
  const dir = join(ROOT, "tests");
  const tests = await list(dir, /\.ts$/);
  for (const other of await list(dir, /^(?!.*\.ts$)/)) {
    const to = join(project, "tests", other);
    await cp(join(dir, other), to, { recursive: true });
  }
  const names = new Set<string>();
  const broken = new Map<string, string>();
  compile("tests", tests.map((t) => join(dir, t)), project, deno, {
    keep: (file) => file.startsWith(join(project, "tests")),
    before: [packageImports(exports, names, broken)],
  });
  await stripExamples(join(project, "examples"));
  const unrun = [...broken].map(([file, why]) => `${file} imports ${why}`);
  if ([...broken.keys()].some((f) => !f.endsWith("_test.ts"))) {
    throw new Error(unrun.join("\n"));
  }
  const manifest = await readJson<Manifest>(join(ROOT, "package.json"));
  const deps = [...names].map((name) => {
    const version = manifest.devDependencies?.[name];
    if (version !== undefined) return `${name}@${version}`;
    throw new Error(`Tests import "${name}", which package.json lacks`);
  });
  const files = tests.filter((t) => t.endsWith("_test.ts"))
    .filter((t) => !broken.has(join("tests", t)))
    .map((t) => join("tests", t.replace(/\.ts$/, ".js")));
  return { files, deps, unrun };
}

/**
 * Writes examples/*.ts as JavaScript into `to`, types stripped and imports
 * left as they are (`@seaport/seaport` is the installed package there), for
 * tests/examples_test.ts to run with Node or Bun. (`deno task check`
 * type-checks them.)
 */
async function stripExamples(to: string): Promise<void> {
  const dir = join(ROOT, "examples");
  await Deno.mkdir(to, { recursive: true });
  for (const file of await list(dir, /\.ts$/)) {
    const source = await Deno.readTextFile(join(dir, file));
    const { outputText } = ts.transpileModule(source, {
      compilerOptions: {
        module: ts.ModuleKind.ESNext,
        target: ts.ScriptTarget.ES2022,
      },
      fileName: file,
    });
    await Deno.writeTextFile(
      join(to, file.replace(/\.ts$/, ".js")),
      outputText,
    );
  }
}

/**
 * Rewrites imports of the sources (`../registry.ts`) to the package's
 * specifiers (`@seaport/seaport/registry`); records bare imports in `names`
 * and the files that import what the package lacks in `broken`.
 */
function packageImports(
  exports: Exports,
  names: Set<string>,
  broken: Map<string, string>,
): ts.TransformerFactory<ts.SourceFile> {
  const tests = join(ROOT, "tests");
  return (ctx) => (file) => {
    // Sources the tests pull in (store/etcd/…, client/*.ts, http/*.ts
    // importing "../registry.ts") are compiled along but not kept: only the
    // tests' own imports name the package.
    if (relative(tests, file.fileName).startsWith("..")) return file;
    const f = ctx.factory;
    const rewrite = (spec: ts.StringLiteral): ts.StringLiteral => {
      const bare = npmBare(spec.text);
      if (bare !== undefined) {
        names.add(
          bare.split("/").slice(0, bare.startsWith("@") ? 2 : 1).join("/"),
        );
        return f.createStringLiteral(bare);
      }
      const path = spec.text;
      // `../errors.ts` → "./errors"; `../store/etcd/mod.ts` → "./store/etcd".
      const module = /^\.\.\/([\w/]+?)(?:\/mod)?\.[jt]s$/.exec(path)?.[1];
      const sub = module === "mod" ? "." : `./${module}`;
      if (module !== undefined && exports[sub] !== undefined) {
        return f.createStringLiteral(sub === "." ? NAME : `${NAME}/${module}`);
      }
      if (path.startsWith("../")) {
        const why = `"${path}", which the npm package does not export`;
        broken.set(relative(ROOT, file.fileName), why);
      } else if (!path.startsWith("./") && !isBuiltin(path)) {
        const parts = path.split("/");
        names.add(parts.slice(0, path.startsWith("@") ? 2 : 1).join("/"));
      }
      return spec;
    };
    const visit = (n: ts.Node): ts.Node =>
      ts.isStringLiteral(n) && isModuleSpecifier(n)
        ? rewrite(n)
        : ts.visitEachChild(n, visit, ctx);
    return ts.visitEachChild(file, visit, ctx);
  };
}

/** `semver` for `npm:semver@7.8.6` (and `pkg/sub` for `npm:pkg@1/sub`). */
function npmBare(specifier: string): string | undefined {
  const m = /^npm:((?:@[^/@]+\/)?[^/@]+)(?:@[^/]*)?(\/.*)?$/.exec(specifier);
  return m === null ? undefined : m[1]! + (m[2] ?? "");
}

/**
 * Rewrites Deno's `npm:semver@7.8.6` specifiers to the package name
 * (`semver`), which the package's dependencies pin.
 */
function npmSpecifiers(): ts.TransformerFactory<ts.SourceFile> {
  return (ctx) => (file) => {
    const f = ctx.factory;
    const visit = (n: ts.Node): ts.Node => {
      if (ts.isStringLiteral(n) && isModuleSpecifier(n)) {
        const bare = npmBare(n.text);
        if (bare !== undefined) return f.createStringLiteral(bare);
      }
      return ts.visitEachChild(n, visit, ctx);
    };
    return ts.visitEachChild(file, visit, ctx);
  };
}

/** Whether `node` names the module of an import, export or `import()`. */
function isModuleSpecifier(node: ts.StringLiteral): boolean {
  const p = node.parent;
  return ((ts.isImportDeclaration(p) || ts.isExportDeclaration(p)) &&
    p.moduleSpecifier === node) ||
    (ts.isCallExpression(p) && p.arguments[0] === node &&
      p.expression.kind === ts.SyntaxKind.ImportKeyword);
}

/** Type-checks `roots` and emits them into `outDir`; throws on any error. */
function compile(
  what: string,
  roots: string[],
  outDir: string,
  deno: DenoJson,
  emit: {
    keep?: (file: string) => boolean;
    before?: ts.TransformerFactory<ts.SourceFile>[];
  } = {},
): void {
  const { lib: _lib, types: _types, ...strict } = deno.compilerOptions ?? {};
  const { options, errors } = ts.convertCompilerOptionsFromJson({
    ...strict,
    target: "ES2022",
    module: "NodeNext",
    moduleResolution: "NodeNext",
    lib: ["ES2022", "ESNext.Disposable"],
    types: ["node"],
    typeRoots: [join(ROOT, "node_modules", "@types")],
    rewriteRelativeImportExtensions: true,
    // Deno's npm: specifiers, typed by the packages installed for the build
    paths: {
      "npm:semver@*": [
        join(ROOT, "node_modules", "@types", "semver", "index.d.ts"),
      ],
    },
    declaration: emit.keep === undefined,
    rootDir: ROOT,
    outDir,
    newLine: "lf",
    skipLibCheck: true,
  }, ROOT);
  const host = ts.createCompilerHost(options);
  const { fileExists, getSourceFile } = host;
  host.fileExists = (file) => file === AMBIENT || fileExists.call(host, file);
  host.getSourceFile = (file, language, ...rest) =>
    file === AMBIENT
      ? ts.createSourceFile(file, AMBIENT_TEXT, language)
      : getSourceFile.call(host, file, language, ...rest);
  const program = ts.createProgram([...roots, AMBIENT], options, host);
  const diagnostics = [...errors, ...ts.getPreEmitDiagnostics(program)];
  if (diagnostics.length === 0) {
    const keep = emit.keep ?? (() => true);
    const write: ts.WriteFileCallback = (file, text, bom) =>
      keep(file) && host.writeFile(file, text, bom);
    const before = emit.before ?? [];
    const result = program.emit(undefined, write, undefined, false, { before });
    diagnostics.push(...result.diagnostics);
  }
  if (diagnostics.length === 0) return;
  const report = ts.formatDiagnosticsWithColorAndContext(diagnostics, host);
  throw new Error(`TypeScript ${ts.version} rejected the ${what}:\n${report}`);
}

/**
 * Runs `node --test` in `project`; the counts come from a TAP report, and so
 * do the top-level tests skipped, with why.
 */
async function nodeTest(
  project: string,
  files: string[],
  env: Record<string, string>,
  summary: string[],
): Promise<{ ok: boolean; names: string[]; skipped: Map<string, string> }> {
  const tap = join(project, "results.tap");
  const node = (await run("node", ["--version"], project)).trim();
  console.log(`\nTesting the installed package under Node ${node}`);
  const { code } = await new Deno.Command("node", {
    args: [
      "--test",
      "--test-concurrency=1", // one file at a time, as `deno test` runs them
      "--test-timeout=120000", // a file that never exits fails, not hangs
      "--test-reporter=spec",
      "--test-reporter-destination=stdout",
      "--test-reporter=tap",
      `--test-reporter-destination=${tap}`,
      ...files,
    ],
    cwd: project,
    env,
    stdout: "inherit",
  }).output();
  const report = await Deno.readTextFile(tap).catch(() => "");
  const count = (key: string) =>
    `${new RegExp(`^# ${key} (\\d+)$`, "m").exec(report)?.[1] ?? "?"} ${key}`;
  const ok = code === 0;
  const counts = ["pass", "fail", "skipped", "cancelled"].map(count).join(", ");
  const exit = ok ? "" : `; exit code ${code}`;
  summary.push(
    `${ok ? "✓" : "✗"} node --test, ${files.length} files: ${counts}${exit}`,
  );
  const names: string[] = [];
  const skipped = new Map<string, string>();
  for (const m of report.matchAll(/^(?:not )?ok \d+ - (.*?)(?: # (.*))?$/gm)) {
    names.push(m[1]!);
    const why = /^SKIP ?(.*)$/.exec(m[2] ?? "")?.[1];
    if (why !== undefined) skipped.set(m[1]!, why);
  }
  for (const [name, why] of skipped) {
    summary.push(`  skipped "${name}": ${why}`);
  }
  return { ok, names, skipped };
}

/**
 * Runs the same files with `bun test` in `project`; the counts and the
 * skipped tests come from a JUnit report. Bun's runner gives every test 5 s
 * unless told otherwise (node:test gives it no limit), so the limit is the
 * one Node's runner gives a file. Fails unless Bun ran the same top-level
 * tests as Node and skipped exactly those Node skipped (whose reasons say
 * why).
 */
async function bunTest(
  project: string,
  files: string[],
  env: Record<string, string>,
  node: { names: string[]; skipped: Map<string, string> },
  summary: string[],
): Promise<boolean> {
  if (!existsSync(BUN)) {
    summary.push(`✗ bun test: no ${BUN}; run npm install`);
    return false;
  }
  const xml = join(project, "results.xml");
  const bun = (await run(BUN, ["--version"], project)).trim();
  console.log(`\nTesting the installed package under Bun ${bun}`);
  const { code } = await new Deno.Command(BUN, {
    args: [
      "test",
      "--timeout=120000",
      "--reporter=junit",
      `--reporter-outfile=${xml}`,
      ...files.map((f) => `./${f}`),
    ],
    cwd: project,
    env,
    stdout: "inherit",
    // failures are printed on stderr (the junit file has only their message)
    stderr: "inherit",
  }).output();
  const report = await Deno.readTextFile(xml).catch(() => "");
  const top = /<testsuites [^>]*>/.exec(report)?.[0] ?? "";
  const attr = (key: string) =>
    Number(new RegExp(` ${key}="(\\d+)"`).exec(top)?.[1] ?? NaN);
  const [tests, failures, skips] = ["tests", "failures", "skipped"].map(attr);
  const cases = [...report.matchAll(
    /<testcase name="([^"]*)"[^>]*?(\/)?>(\s*<skipped\b)?/g,
  )].map((m) => ({ name: unescapeXml(m[1]!), skipped: !m[2] && !!m[3] }));
  const skipped = cases.filter((c) => c.skipped).map((c) => c.name);
  const ran = cases.map((c) => c.name);
  const pass = tests! - failures! - skips!;
  const differ = (a: string[], b: string[]) => a.filter((n) => !b.includes(n));
  const nodeSkips = [...node.skipped.keys()];
  const problems = [
    ...differ(node.names, ran).map((n) => `Bun did not run "${n}"`),
    ...differ(ran, node.names).map((n) => `Node did not run "${n}"`),
    ...differ(skipped, nodeSkips).map((n) => `Bun alone skipped "${n}"`),
    ...differ(nodeSkips, skipped).map((n) => `Bun ran "${n}", Node skipped`),
  ];
  const same = problems.length === 0;
  const ok = code === 0 && !Number.isNaN(pass) && same;
  const exit = code === 0 ? "" : `; exit code ${code}`;
  const counts = `${pass} pass, ${failures} fail, ${skips} skipped`;
  const what = "top-level tests; the same tests and skips as Node";
  summary.push(
    `${
      ok ? "✓" : "✗"
    } bun test, ${files.length} files: ${counts} (${what})${exit}`,
  );
  summary.push(...problems.map((p) => `✗ ${p}`));
  const failed = [...report.matchAll(
    /<testcase name="([^"]*)"[^>]*[^/]>\s*<failure\b/g,
  )].map((m) => unescapeXml(m[1]!));
  summary.push(...failed.map((n) => `✗ failed under Bun: "${n}"`));
  return ok;
}

function unescapeXml(text: string): string {
  const named: Record<string, string> = {
    amp: "&",
    lt: "<",
    gt: ">",
    quot: '"',
    apos: "'",
  };
  return text.replace(
    /&(#x?[0-9a-f]+|\w+);/gi,
    (all, e: string) =>
      e.startsWith("#")
        ? String.fromCodePoint(
          Number(e[1] === "x" ? `0${e.slice(1)}` : e.slice(1)),
        )
        : named[e] ?? all,
  );
}

/** Runs a command, inheriting stderr; returns stdout; throws on failure. */
async function run(cmd: string, args: string[], cwd: string): Promise<string> {
  const out = await new Deno.Command(cmd, { args, cwd, stderr: "inherit" })
    .output();
  const stdout = new TextDecoder().decode(out.stdout);
  if (out.success) return stdout;
  console.log(stdout);
  const command = [basename(cmd), ...args].join(" ");
  throw new Error(`"${command}" failed with exit code ${out.code}`);
}

/** The names in `dir` that match `pattern`, sorted. */
async function list(dir: string, pattern: RegExp): Promise<string[]> {
  const entries = await Array.fromAsync(Deno.readDir(dir));
  return entries.map((e) => e.name).filter((n) => pattern.test(n)).sort();
}

async function readJson<T>(file: string): Promise<T> {
  return JSON.parse(await Deno.readTextFile(file)) as T;
}

async function writeJson(file: string, value: unknown): Promise<void> {
  await Deno.mkdir(join(file, ".."), { recursive: true });
  await Deno.writeTextFile(file, JSON.stringify(value, null, 2) + "\n");
}

if (import.meta.main) Deno.exit(await main(Deno.args));
