/**
 * The live web view, embedded as strings so that it ships inside the npm
 * package and the single binary and needs nothing from the network: an HTML
 * shell, one stylesheet and one script (no inline code, so the
 * Content-Security-Policy allows only these). The script follows
 * `/v1/events?snapshot=1` with EventSource and checks filter patterns by
 * asking `/v1/pattern`, so they go through the server's own parser.
 *
 * @module
 */

const HEAD = `<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/assets/app.css">`;

/** The web view's HTML shell. */
export function pageHtml(signOut: boolean): string {
  const out = signOut
    ? `<form method="post" action="/logout" class="signout"><button type="submit">Sign out</button></form>`
    : "";
  return `<!doctype html>
<html lang="en">
<head>
${HEAD}
<title>seaport</title>
<script src="/assets/app.js" defer></script>
</head>
<body>
<header>
  <h1>seaport</h1>
  <p id="status" role="status" class="status connecting">Connecting…</p>
  ${out}
</header>
<main>
  <form id="filter-form" class="filter" role="search">
    <label for="filter">Filter by pattern</label>
    <input id="filter" name="pattern" type="search" placeholder="web@1.x"
      autocomplete="off" spellcheck="false" aria-describedby="filter-help filter-error">
    <p id="filter-help" class="help">A role name with an optional semver range, as query() takes: <code>web</code>, <code>web@^1.2</code>.</p>
    <p id="filter-error" class="error" role="alert"></p>
  </form>
  <section aria-labelledby="hosts-title">
    <h2 id="hosts-title">Port ranges in use</h2>
    <ul id="hosts" class="hosts"></ul>
  </section>
  <section aria-labelledby="map-title">
    <h2 id="map-title">Port map</h2>
    <p id="count" class="count" aria-live="polite"></p>
    <table id="map">
      <caption class="visually-hidden">Registered services grouped by role and version</caption>
      <thead><tr>
        <th scope="col">Host</th><th scope="col">Port</th><th scope="col">Env</th>
        <th scope="col">Metadata</th><th scope="col">Up</th>
      </tr></thead>
    </table>
  </section>
  <section aria-labelledby="feed-title">
    <h2 id="feed-title">Recent events</h2>
    <ol id="feed" class="feed"></ol>
  </section>
</main>
</body>
</html>
`;
}

/** The sign-in page, with an error message when the token was wrong. */
export function signInHtml(error: string): string {
  const escaped = error.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);
  return `<!doctype html>
<html lang="en">
<head>
${HEAD}
<title>Sign in · seaport</title>
</head>
<body>
<main class="signin">
  <h1>seaport</h1>
  <form method="post" action="/login">
    <label for="token">HTTP token</label>
    <input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
    <button type="submit">Sign in</button>
    <p class="error" role="alert">${escaped}</p>
  </form>
  <p class="help">This server asks for its read-only HTTP token (<code>--http-token</code>), not its secret.</p>
</main>
</body>
</html>
`;
}

/** The stylesheet. */
export const APP_CSS = `:root {
  color-scheme: light dark;
  --fg: #1b1f24; --bg: #fdfdfc; --muted: #5b6470; --line: #d8dce1;
  --accent: #0b61a4; --ok: #1a7f37; --warn: #9a6700; --bad: #cf222e;
  --added: #dafbe1; --removed: #ffebe9; --bar: #e6eaef;
}
@media (prefers-color-scheme: dark) {
  :root {
    --fg: #e6edf3; --bg: #0d1117; --muted: #9aa4af; --line: #30363d;
    --accent: #58a6ff; --ok: #3fb950; --warn: #d29922; --bad: #f85149;
    --added: #12361f; --removed: #3d1417; --bar: #21262d;
  }
}
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; flex-wrap: wrap; align-items: center; gap: .5rem 1rem; padding: .75rem 1rem; border-bottom: 1px solid var(--line); }
h1 { font-size: 1.25rem; margin: 0; }
h2 { font-size: 1rem; margin: 1.25rem 0 .5rem; }
main { padding: 0 1rem 2rem; max-width: 72rem; }
code { font-family: ui-monospace, monospace; font-size: .9em; }
.status { margin: 0; padding: .1rem .6rem; border-radius: 1rem; font-size: .85rem; border: 1px solid currentColor; }
.status.live { color: var(--ok); }
.status.connecting, .status.reconnecting { color: var(--warn); }
.status.offline { color: var(--bad); }
.signout { margin-left: auto; }
button, input { font: inherit; }
button { padding: .3rem .8rem; border: 1px solid var(--line); border-radius: .3rem; background: var(--bar); color: var(--fg); cursor: pointer; }
button:focus-visible, input:focus-visible { outline: 2px solid var(--accent); outline-offset: 2px; }
.filter { margin-top: 1rem; display: grid; gap: .25rem; max-width: 32rem; }
.filter label { font-weight: 600; }
.filter input { padding: .4rem .6rem; border: 1px solid var(--line); border-radius: .3rem; background: var(--bg); color: var(--fg); }
.filter input[aria-invalid="true"] { border-color: var(--bad); }
.help, .count { margin: 0; color: var(--muted); font-size: .85rem; }
.error { margin: 0; color: var(--bad); min-height: 1.2em; font-size: .9rem; }
.hosts { list-style: none; padding: 0; margin: 0; display: grid; gap: .5rem; }
.hosts li { display: grid; grid-template-columns: minmax(6rem, 12rem) 1fr auto; align-items: center; gap: .75rem; }
.hosts svg { width: 100%; height: 18px; display: block; }
.hosts .track { fill: var(--bar); }
.hosts .used { fill: var(--accent); }
.hosts .label { font-variant-numeric: tabular-nums; color: var(--muted); font-size: .85rem; }
table { width: 100%; border-collapse: collapse; }
th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid var(--line); vertical-align: top; }
thead th { font-size: .85rem; color: var(--muted); }
tbody th { background: var(--bar); font-weight: 600; }
td.port, td.up { font-variant-numeric: tabular-nums; }
td.meta { font-family: ui-monospace, monospace; font-size: .85rem; word-break: break-word; }
tr.added td { background: var(--added); transition: background 1.5s; }
tr.removed td { background: var(--removed); text-decoration: line-through; }
tr.empty td { color: var(--muted); }
.feed { list-style: none; padding: 0; margin: 0; font-size: .9rem; }
.feed li { padding: .2rem 0; border-bottom: 1px solid var(--line); }
.feed time { color: var(--muted); font-variant-numeric: tabular-nums; margin-right: .5rem; }
.feed .type { display: inline-block; min-width: 4.5rem; font-weight: 600; }
.feed .free { color: var(--bad); }
.feed .allocate, .feed .assume { color: var(--ok); }
.feed .reset { color: var(--warn); }
.visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
.signin { max-width: 24rem; margin: 3rem auto; }
.signin form { display: grid; gap: .5rem; }
.signin input { padding: .4rem .6rem; border: 1px solid var(--line); border-radius: .3rem; }
@media (max-width: 640px) {
  main { padding: 0 .6rem 1.5rem; }
  thead { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); }
  table, tbody, tr, td, tbody th { display: block; width: 100%; }
  tbody tr { border-bottom: 1px solid var(--line); padding: .25rem 0; }
  td { border: 0; padding: .1rem .4rem; display: grid; grid-template-columns: 6rem 1fr; }
  td::before { content: attr(data-label); color: var(--muted); font: .85rem system-ui, sans-serif; }
  .hosts li { grid-template-columns: 1fr auto; }
  .hosts svg { grid-column: 1 / -1; }
}
`;

/** The script: state from the event stream, rendered into the table. */
export const APP_JS = `"use strict";
(function () {
  var records = new Map();
  var since = {};
  var ranges = {};
  var matched = null;
  var added = new Map();
  var removed = new Map();
  var feed = [];
  var source = null;
  var filterSeq = 0;
  var filterTimer = 0;

  function $(id) { return document.getElementById(id); }
  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    if (attrs) for (var k in attrs) e.setAttribute(k, attrs[k]);
    (children || []).forEach(function (c) {
      e.append(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return e;
  }
  var SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs) {
    var e = document.createElementNS(SVG, tag);
    for (var k in attrs) e.setAttribute(k, String(attrs[k]));
    return e;
  }

  function setStatus(kind, text) {
    var s = $("status");
    s.className = "status " + kind;
    s.textContent = text;
  }

  function duration(ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return s + "s";
    var m = Math.floor(s / 60);
    if (m < 60) return m + "m " + (s % 60) + "s";
    var h = Math.floor(m / 60);
    if (h < 24) return h + "h " + (m % 60) + "m";
    return Math.floor(h / 24) + "d " + (h % 24) + "h";
  }

  function versionKey(v) {
    return v.split(/[.+-]/).map(function (p) {
      return /^\\d+$/.test(p) ? ("0000000000" + p).slice(-10) : p;
    }).join(".");
  }

  function meta(r) {
    var out = {};
    var fixed = { host: 1, port: 1, role: 1, version: 1, env: 1, id: 1 };
    var any = false;
    for (var k in r) if (!fixed[k]) { out[k] = r[k]; any = true; }
    return any ? JSON.stringify(out) : "";
  }

  function row(r, state) {
    var up = since[r.id];
    var cells = [
      el("td", { "data-label": "Host", "class": "host" }, [r.host]),
      el("td", { "data-label": "Port", "class": "port" }, [String(r.port)]),
      el("td", { "data-label": "Env", "class": "env" }, [r.env === "" ? "(default)" : r.env]),
      el("td", { "data-label": "Metadata", "class": "meta" }, [meta(r)]),
      el("td", { "data-label": "Up", "class": "up", "data-since": up ? String(up) : "" },
        [up ? duration(Date.now() - up) : ""]),
    ];
    var tr = el("tr", { "data-id": r.id, "data-role": r.role + "@" + r.version }, cells);
    if (state) tr.className = state;
    return tr;
  }

  function render() {
    var now = Date.now();
    added.forEach(function (t, id) { if (now - t > 2000) added.delete(id); });
    removed.forEach(function (v, id) { if (now - v.t > 1000) removed.delete(id); });
    var shown = [];
    records.forEach(function (r) { if (!matched || matched.has(r.id)) shown.push([r, added.has(r.id) ? "added" : ""]); });
    removed.forEach(function (v) { if (!matched || matched.has(v.r.id)) shown.push([v.r, "removed"]); });
    var groups = new Map();
    shown.forEach(function (x) {
      var k = x[0].role + "@" + x[0].version;
      if (!groups.has(k)) groups.set(k, { role: x[0].role, version: x[0].version, rows: [] });
      groups.get(k).rows.push(x);
    });
    var keys = Array.from(groups.keys()).sort(function (a, b) {
      var ga = groups.get(a), gb = groups.get(b);
      if (ga.role !== gb.role) return ga.role < gb.role ? -1 : 1;
      return versionKey(ga.version) < versionKey(gb.version) ? -1 : 1;
    });
    var table = $("map");
    table.querySelectorAll("tbody").forEach(function (b) { b.remove(); });
    if (keys.length === 0) {
      var text = records.size === 0 ? "No services are registered." : "No services match the filter.";
      table.append(el("tbody", {}, [el("tr", { "class": "empty" }, [el("td", { colspan: "5" }, [text])])]));
    }
    keys.forEach(function (k) {
      var g = groups.get(k);
      g.rows.sort(function (a, b) {
        return a[0].host === b[0].host ? a[0].port - b[0].port : (a[0].host < b[0].host ? -1 : 1);
      });
      var live = g.rows.filter(function (x) { return x[1] !== "removed"; }).length;
      var head = el("tr", { "class": "group" }, [
        el("th", { scope: "rowgroup", colspan: "5" }, [g.role + "@" + g.version + " (" + live + ")"]),
      ]);
      var body = el("tbody", { "data-group": k }, [head]);
      g.rows.forEach(function (x) { body.append(row(x[0], x[1])); });
      table.append(body);
    });
    var n = matched ? Array.from(records.keys()).filter(function (id) { return matched.has(id); }).length : records.size;
    $("count").textContent = n + (n === 1 ? " service" : " services") + (matched ? " match the filter" : " registered");
    renderHosts();
    if (added.size > 0 || removed.size > 0) setTimeout(render, 1050);
  }

  function rangeOf(host) {
    return ranges[host] || ranges["*"] || [10000, 20000];
  }

  function renderHosts() {
    var used = new Map();
    records.forEach(function (r) {
      if (!used.has(r.host)) used.set(r.host, []);
      used.get(r.host).push(r.port);
    });
    var list = $("hosts");
    list.replaceChildren();
    if (used.size === 0) {
      list.append(el("li", {}, [el("span", { "class": "label" }, ["No host has a registration yet."])]));
    }
    Array.from(used.keys()).sort().forEach(function (host) {
      var range = rangeOf(host), low = range[0], high = range[1];
      var size = high - low + 1;
      var ports = used.get(host).filter(function (p) { return p >= low && p <= high; });
      var label = ports.length + " of " + size + " ports in use (" + low + "-" + high + ")";
      var pic = svg("svg", { viewBox: "0 0 1000 18", preserveAspectRatio: "none", role: "img", "aria-label": host + ": " + label });
      pic.append(svg("rect", { "class": "track", x: 0, y: 0, width: 1000, height: 18, rx: 3 }));
      var w = Math.max(2, 1000 / size);
      ports.forEach(function (p) {
        pic.append(svg("rect", { "class": "used", x: ((p - low) / size) * 1000, y: 0, width: w, height: 18 }));
      });
      var share = Math.min(1000, (ports.length / size) * 1000);
      pic.append(svg("rect", { "class": "used", x: 0, y: 15, width: Math.max(share, ports.length ? 2 : 0), height: 3 }));
      list.append(el("li", { "data-host": host }, [
        el("span", { "class": "host" }, [host]), pic, el("span", { "class": "label" }, [label]),
      ]));
    });
  }

  function addFeed(type, text, time) {
    feed.unshift([type, text, time]);
    if (feed.length > 30) feed.length = 30;
    var list = $("feed");
    list.replaceChildren();
    feed.forEach(function (f) {
      var d = new Date(f[2]);
      list.append(el("li", {}, [
        el("time", { datetime: d.toISOString() }, [d.toLocaleTimeString()]),
        el("span", { "class": "type " + f[0] }, [f[0]]),
        " " + f[1],
      ]));
    });
  }

  function onChange(e) {
    var c = JSON.parse(e.data);
    var r = c.record;
    if (c.type === "free") {
      if (records.has(r.id)) removed.set(r.id, { r: r, t: Date.now() });
      records.delete(r.id);
      added.delete(r.id);
      delete since[r.id];
    } else {
      records.set(r.id, r);
      since[r.id] = c.time;
      added.set(r.id, Date.now());
    }
    addFeed(c.type, r.role + "@" + r.version + " on " + r.host + ":" + r.port + (r.env ? " (" + r.env + ")" : ""), c.time);
    render();
    if ($("filter").value.trim() !== "") scheduleFilter(50);
  }

  function connect() {
    if (source) source.close();
    setStatus("connecting", "Connecting…");
    source = new EventSource("/v1/events?snapshot=1");
    source.addEventListener("open", function () { setStatus("live", "Live"); });
    source.addEventListener("snapshot", function (e) {
      var d = JSON.parse(e.data);
      records = new Map();
      d.records.forEach(function (r) { records.set(r.id, r); });
      since = d.since || {};
      ranges = d.ranges || {};
      setStatus("live", "Live");
      render();
      if ($("filter").value.trim() !== "") scheduleFilter(0);
    });
    source.addEventListener("reset", function (e) {
      var d = JSON.parse(e.data);
      addFeed("reset", "reloaded: " + d.reason, Date.now());
    });
    ["allocate", "assume", "free"].forEach(function (t) { source.addEventListener(t, onChange); });
    source.addEventListener("error", function () {
      if (source.readyState === 2) {
        setStatus("offline", "Disconnected: retrying…");
        setTimeout(connect, 2000);
      } else {
        setStatus("reconnecting", "Reconnecting…");
      }
    });
  }

  function scheduleFilter(ms) {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(applyFilter, ms);
  }

  function applyFilter() {
    var input = $("filter");
    var pattern = input.value.trim();
    var seq = ++filterSeq;
    if (pattern === "") {
      matched = null;
      input.removeAttribute("aria-invalid");
      $("filter-error").textContent = "";
      render();
      return;
    }
    var q = encodeURIComponent(pattern);
    fetch("/v1/pattern?pattern=" + q)
      .then(function (res) { return res.json(); })
      .then(function (check) {
        if (seq !== filterSeq) return null;
        if (check.error) {
          input.setAttribute("aria-invalid", "true");
          $("filter-error").textContent = check.error.message;
          return null;
        }
        return fetch("/v1/services?pattern=" + q).then(function (res) { return res.json(); });
      })
      .then(function (list) {
        if (list === null || seq !== filterSeq) return;
        input.removeAttribute("aria-invalid");
        $("filter-error").textContent = "";
        matched = new Set(list.map(function (r) { return r.id; }));
        render();
      })
      .catch(function () {
        if (seq === filterSeq) $("filter-error").textContent = "Cannot reach the server to check the pattern.";
      });
  }

  document.addEventListener("DOMContentLoaded", function () {
    $("filter").addEventListener("input", function () { scheduleFilter(150); });
    $("filter-form").addEventListener("submit", function (e) { e.preventDefault(); scheduleFilter(0); });
    setInterval(function () {
      var now = Date.now();
      document.querySelectorAll("td.up").forEach(function (td) {
        var t = Number(td.getAttribute("data-since"));
        if (t) td.textContent = duration(now - t);
      });
    }, 1000);
    render();
    connect();
  });
})();
`;
