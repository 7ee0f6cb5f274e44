//! The `/ui` page: one self-contained HTML document (inline CSS and JavaScript, SVG; nothing
//! fetched but `/ui/graph.json`) that lays the services out on a circle, draws each edge as an
//! arrow labelled with calls/s, success rate and p99, marks nodes with stale or NACKing
//! subscribers, lists the edges in a table, and redraws every 2 s.
//!
//! Names are set as text (`textContent`), never as markup, and the response's
//! Content-Security-Policy allows nothing but inline code and same-origin fetches: the page
//! works air-gapped and a name cannot inject anything.

/// The Content-Security-Policy sent with the page.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; \
     form-action 'none'";

/// The page.
pub(crate) const PAGE: &str = r##"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mesh: live view</title>
<link rel="icon" href="data:,">
<style>
  :root { --fg: #1d2330; --muted: #6b7385; --bg: #f7f8fb; --card: #ffffff; --line: #d9dde6;
          --ok: #2f8f5b; --warn: #c9821b; --bad: #c23b3b; --node: #3b6fd4; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif;
         color: var(--fg); background: var(--bg); }
  header { display: flex; align-items: baseline; gap: 16px; padding: 12px 20px;
           border-bottom: 1px solid var(--line); background: var(--card); }
  header h1 { font-size: 17px; margin: 0; }
  #status { color: var(--muted); }
  #status.error { color: var(--bad); }
  main { padding: 12px 20px; }
  #graph { width: 100%; height: 560px; background: var(--card); border: 1px solid var(--line);
           border-radius: 8px; display: block; }
  .legend { color: var(--muted); margin: 6px 0 14px; }
  .legend span { margin-right: 14px; }
  .dot { display: inline-block; width: 10px; height: 10px; border-radius: 50%;
         margin-right: 4px; vertical-align: -1px; }
  table { border-collapse: collapse; width: 100%; background: var(--card);
          border: 1px solid var(--line); }
  th, td { text-align: left; padding: 5px 10px; border-bottom: 1px solid var(--line); }
  th { color: var(--muted); font-weight: 600; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  .node circle { fill: #eaf0fc; stroke: var(--node); stroke-width: 2; }
  .node.stale circle { stroke: var(--warn); stroke-width: 4; }
  .node.nacking circle { stroke: var(--bad); stroke-width: 4; }
  .node.workload circle { fill: #f1f1f4; stroke-dasharray: 5 3; }
  .node text { text-anchor: middle; font-size: 13px; }
  .node .badge { font-size: 11px; fill: var(--bad); }
  .node.stale .badge { fill: var(--warn); }
  .edge path { fill: none; stroke-width: 2; }
  .edge text { font-size: 12px; text-anchor: middle; }
  .edge rect.label { fill: #ffffff; fill-opacity: 0.9; stroke: var(--line); }
  .empty { fill: var(--muted); text-anchor: middle; font-size: 15px; }
</style>
</head>
<body>
<header>
  <h1>mesh: live view</h1>
  <span id="status">loading&hellip;</span>
</header>
<main>
  <svg id="graph" viewBox="0 0 1000 560" role="img" aria-label="services and the calls between them">
    <defs>
      <marker id="arrow-ok" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#2f8f5b"/></marker>
      <marker id="arrow-warn" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#c9821b"/></marker>
      <marker id="arrow-bad" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#c23b3b"/></marker>
    </defs>
    <g id="edges"></g>
    <g id="nodes"></g>
  </svg>
  <div class="legend">
    <span><i class="dot" style="background:#2f8f5b"></i>success &ge; 99%</span>
    <span><i class="dot" style="background:#c9821b"></i>&ge; 90%</span>
    <span><i class="dot" style="background:#c23b3b"></i>&lt; 90%</span>
    <span>orange ring: a subscriber is stale; red ring: a subscriber NACKed; dashed: a workload that serves no service</span>
  </div>
  <table>
    <thead><tr><th>from</th><th>to</th><th>calls/s</th><th>success</th><th>p50</th><th>p99</th><th>calls</th><th>failures</th></tr></thead>
    <tbody id="edge-rows"></tbody>
  </table>
</main>
<script>
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var W = 1000, H = 560, R = 34;
  var edgesG = document.getElementById("edges");
  var nodesG = document.getElementById("nodes");
  var rows = document.getElementById("edge-rows");
  var status = document.getElementById("status");

  function el(name, attrs, parent, text) {
    var e = document.createElementNS(NS, name);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined) { e.textContent = text; }
    if (parent) { parent.appendChild(e); }
    return e;
  }
  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }

  // A workload that serves no service is named by its SPIFFE ID: show its account.
  function label(name) {
    var m = /^spiffe:\/\/[^\/]+\/ns\/([^\/]+)\/sa\/([^\/]+)$/.exec(name);
    return m ? m[2] + " (" + m[1] + ")" : name;
  }
  function rate(x) { return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2); }
  function pct(x) { return (x * 100).toFixed(x >= 0.9995 || x === 0 ? 0 : 1) + "%"; }
  function ms(x) { return x >= 100 ? x.toFixed(0) + " ms" : x >= 1 ? x.toFixed(1) + " ms" : x.toFixed(2) + " ms"; }
  function health(edge) { return edge.successRate >= 0.99 ? "ok" : edge.successRate >= 0.9 ? "warn" : "bad"; }
  var colours = { ok: "#2f8f5b", warn: "#c9821b", bad: "#c23b3b" };

  function layout(nodes) {
    var at = {};
    var n = nodes.length;
    var radius = Math.min(W, H) / 2 - 80;
    nodes.forEach(function (node, i) {
      var angle = n === 1 ? 0 : Math.PI + 2 * Math.PI * i / n;
      var r = n === 1 ? 0 : radius;
      at[node.name] = { x: W / 2 + r * Math.cos(angle) * 1.45, y: H / 2 + r * Math.sin(angle) };
    });
    return at;
  }

  function drawEdge(edge, at) {
    var a = at[edge.from], b = at[edge.to];
    if (!a || !b) { return; }
    var kind = health(edge);
    var g = el("g", { "class": "edge " + kind }, edgesG);
    var d, lx, ly;
    if (edge.from === edge.to) {
      d = "M" + (a.x - 12) + "," + (a.y - R) + " C" + (a.x - 50) + "," + (a.y - R - 70) + " " +
          (a.x + 50) + "," + (a.y - R - 70) + " " + (a.x + 12) + "," + (a.y - R);
      lx = a.x; ly = a.y - R - 58;
    } else {
      var dx = b.x - a.x, dy = b.y - a.y, len = Math.sqrt(dx * dx + dy * dy) || 1;
      var ux = dx / len, uy = dy / len;
      // Bent to its left, so that calls both ways between two services do not overlap.
      var bend = 28, cx = (a.x + b.x) / 2 - uy * bend, cy = (a.y + b.y) / 2 + ux * bend;
      var sx = a.x + ux * R, sy = a.y + uy * R, ex = b.x - ux * (R + 3), ey = b.y - uy * (R + 3);
      d = "M" + sx + "," + sy + " Q" + cx + "," + cy + " " + ex + "," + ey;
      lx = (sx + 2 * cx + ex) / 4; ly = (sy + 2 * cy + ey) / 4 - 6;
    }
    var width = Math.min(6, 1.5 + Math.log(1 + edge.callsPerSecond) / Math.LN10 * 1.5);
    el("path", { d: d, stroke: colours[kind], "stroke-width": width.toFixed(1),
                 "marker-end": "url(#arrow-" + kind + ")" }, g);
    var text = el("text", { x: lx, y: ly, fill: colours[kind] }, g,
       rate(edge.callsPerSecond) + "/s \u00b7 " + pct(edge.successRate) + " \u00b7 p99 " + ms(edge.p99Ms));
    // A card behind the label, so that the line does not run through it.
    var box = text.getBBox();
    g.insertBefore(el("rect", { x: box.x - 4, y: box.y - 2, width: box.width + 8,
                                height: box.height + 4, rx: 4, "class": "label" }), text);
  }

  function drawNode(node, at) {
    var p = at[node.name];
    var classes = ["node", node.kind];
    if (node.nacking > 0) { classes.push("nacking"); } else if (node.stale > 0) { classes.push("stale"); }
    var g = el("g", { "class": classes.join(" "), "data-name": node.name }, nodesG);
    el("title", {}, g, node.name + ": " + node.subscribers + " subscriber(s), " + node.stale +
       " stale, " + node.nacking + " NACKing");
    el("circle", { cx: p.x, cy: p.y, r: R }, g);
    el("text", { x: p.x, y: p.y + 5 }, g, node.subscribers > 0 ? "\u00d7" + node.subscribers : "");
    el("text", { x: p.x, y: p.y + R + 18 }, g, label(node.name));
    var marks = [];
    if (node.nacking > 0) { marks.push(node.nacking + " NACKing"); }
    if (node.stale > 0) { marks.push(node.stale + " stale"); }
    if (marks.length) { el("text", { x: p.x, y: p.y + R + 33, "class": "badge" }, g, marks.join(", ")); }
  }

  function cell(row, text, num) {
    var td = document.createElement("td");
    td.textContent = text;
    if (num) { td.className = "num"; }
    row.appendChild(td);
  }

  function draw(graph) {
    clear(edgesG); clear(nodesG); clear(rows);
    var at = layout(graph.nodes);
    if (graph.nodes.length === 0) {
      el("text", { x: W / 2, y: H / 2, "class": "empty" }, nodesG, "no subscribers yet");
    }
    graph.edges.forEach(function (edge) { drawEdge(edge, at); });
    graph.nodes.forEach(function (node) { drawNode(node, at); });
    graph.edges.forEach(function (edge) {
      var row = document.createElement("tr");
      cell(row, label(edge.from)); cell(row, edge.to);
      cell(row, rate(edge.callsPerSecond), true); cell(row, pct(edge.successRate), true);
      cell(row, ms(edge.p50Ms), true); cell(row, ms(edge.p99Ms), true);
      cell(row, String(edge.calls), true); cell(row, String(edge.failures), true);
      rows.appendChild(row);
    });
    if (graph.edges.length === 0) {
      var row = document.createElement("tr");
      var td = document.createElement("td");
      td.colSpan = 8; td.textContent = "no calls reported in the last " + graph.windowSeconds + " s";
      row.appendChild(td); rows.appendChild(row);
    }
  }

  function refresh() {
    fetch("/ui/graph.json", { cache: "no-store" })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (graph) {
        draw(graph);
        status.className = "";
        status.textContent = graph.nodes.length + " nodes, " + graph.edges.length +
          " edges; last " + graph.windowSeconds + " s; updated " +
          new Date(graph.generatedAtUnixMs).toLocaleTimeString();
      })
      .catch(function (error) {
        // Shown on the page, not logged: the control service may be restarting.
        status.className = "error";
        status.textContent = "cannot load /ui/graph.json: " + error.message;
      })
      .then(function () { setTimeout(refresh, 2000); });
  }
  refresh();
})();
</script>
</body>
</html>
"##;
