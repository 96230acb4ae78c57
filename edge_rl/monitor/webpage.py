"""The web view's one page: inline CSS and JavaScript, no build step, no CDN, nothing fetched but /events.

The page arrives with the newest rendering inside (a JSON data block), so it shows the fleet at
once (and a `chromium --screenshot` of it too); `/events?from=RUN.VERSION` then streams what changes.
The script keeps one table row per device (sorted by name), updates only the cells whose text
changed, and draws the success-rate (0-1) and return (its own range) sparklines as inline SVG.
A message of another run (the monitor restarted) starts the table afresh: its devices may differ.
A monitor with every stream taken says `busy` (and when to retry) over a 200 stream, since an
error status would make EventSource give up for good; the page says so, and says when it did give up.
Device strings only ever go into `textContent`, never into markup. The Content-Security-Policy
allows exactly this script and this style (by hash) and connections to this server.
"""

from __future__ import annotations

import base64
import hashlib

STYLE = """
body { font: 13px/1.35 system-ui, sans-serif; margin: 16px; color: #1f2328; background: #fff; }
h1 { font-size: 16px; margin: 0 0 4px; }
#bar { color: #57606a; margin-bottom: 8px; }
#bar label { margin-left: 16px; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: 2px 8px; border-bottom: 1px solid #d0d7de; white-space: nowrap; }
th { position: sticky; top: 0; background: #f6f8fa; text-align: left; }
td.right { text-align: right; }
td svg { vertical-align: middle; margin-right: 4px; }
tr.alarm { background: #fff5f5; }
.only-alarms tbody tr:not(.alarm) { display: none; }
.st-green { color: #1a7f37; } .st-red { color: #cf222e; } .st-yellow { color: #9a6700; }
.st-dim { color: #6e7781; } .st-bold { font-weight: 600; }
#state.down { color: #cf222e; }
"""

SCRIPT = """
"use strict";
const table = document.getElementById("fleet");
const rows = new Map();  // device -> <tr>
let columns = null, run = null;

function header(head) {
  columns = head.columns;
  const tr = table.tHead.insertRow();
  columns.forEach((name, i) => {
    const th = document.createElement("th");
    th.textContent = name;
    if (head.justify[i] === "right") th.className = "right";
    tr.appendChild(th);
  });
}

function spark(heights) {  // heights 0-100 (null: no value), scaled by the monitor
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("width", "96");
  svg.setAttribute("height", "18");
  const step = 96 / Math.max(heights.length - 1, 1);
  let d = "", up = true;
  heights.forEach((h, i) => {
    if (h === null) { up = true; return; }
    d += (up ? "M" : "L") + (i * step).toFixed(1) + "," + (16 - 0.14 * h).toFixed(1);
    up = false;
  });
  if (!d) return svg;
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", d);
  path.setAttribute("fill", "none");
  path.setAttribute("stroke", "#0969da");
  path.setAttribute("stroke-width", "1.5");
  svg.appendChild(path);
  return svg;
}

function newRow(name, head) {
  const tr = document.createElement("tr");
  tr.dataset.device = name;
  columns.forEach((column, i) => {
    const td = tr.insertCell();
    td.dataset.col = column;
    if (head.justify[i] === "right") td.classList.add("right");
  });
  let before = null;
  for (const [other, row] of rows) if (other > name && (!before || other < before.dataset.device)) before = row;
  table.tBodies[0].insertBefore(tr, before);
  rows.set(name, tr);
  return tr;
}

function apply(message) {
  const head = message.head, sender = message.id.split(".")[0];
  if (!columns) header(head);
  if (run !== null && sender !== run) { table.tBodies[0].replaceChildren(); rows.clear(); }  // a restarted monitor
  run = sender;
  document.getElementById("title").textContent = head.title;
  document.getElementById("caption").textContent = head.caption;
  document.getElementById("updated").textContent = new Date(head.now * 1000).toLocaleTimeString();
  for (const [name, row] of Object.entries(message.rows)) {
    const tr = rows.get(name) || newRow(name, head);
    row.c.forEach((text, i) => {
      const td = tr.cells[i], style = row.s[i].split(" ").filter(Boolean).map(s => "st-" + s).join(" ");
      const curve = columns[i] === "success" ? spark(row.succ) : columns[i] === "return" ? spark(row.ret) : null;
      if (curve) { td.replaceChildren(curve, document.createTextNode(text)); }
      else if (td.textContent !== text) { td.textContent = text; }
      td.className = (td.classList.contains("right") ? "right " : "") + style;
    });
    tr.classList.toggle("alarm", row.c[columns.indexOf("alarms")] !== "ok");
  }
  const seen = columns.indexOf("seen");
  for (const [name, text] of Object.entries(head.seen)) {
    const tr = rows.get(name);
    if (tr && tr.cells[seen].textContent !== text) tr.cells[seen].textContent = text;
  }
}

const initial = document.getElementById("initial").textContent;
let from = "";
if (initial) { const message = JSON.parse(initial); apply(message); from = message.id; }
const state = document.getElementById("state");
const events = new EventSource("events?from=" + encodeURIComponent(from));
let busy = false;  // told `busy` (every stream taken): the browser retries later, the text stays
function show(text, down) { state.textContent = text; state.className = down ? "down" : ""; }
events.onmessage = e => { busy = false; show("live", false); apply(JSON.parse(e.data)); };
events.onopen = () => { if (!busy) show("live", false); };
events.addEventListener("busy", e => { busy = true; show(`busy: ${e.data} viewers, retrying`, true); });
events.onerror = () => {
  if (events.readyState === EventSource.CLOSED) show("disconnected for good (refused): reload the page", true);
  else if (!busy) show("monitor unreachable, retrying", true);
};
document.getElementById("only").onchange = e => table.classList.toggle("only-alarms", e.target.checked);
"""


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


CSP = f"default-src 'none'; connect-src 'self'; script-src {_hash(SCRIPT)}; style-src {_hash(STYLE)}"

HEAD = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>edge-rl fleet</title>
<style>{STYLE}</style>
</head>
<body>
<h1 id="title">edge-rl fleet</h1>
<div id="bar"><span id="caption">waiting for the monitor</span> · updated <span id="updated">-</span> ·
<span id="state">connecting</span><label><input type="checkbox" id="only"> only devices with alarms</label></div>
<table id="fleet"><thead></thead><tbody></tbody></table>
<script type="application/json" id="initial">""".encode()
TAIL = f"""</script>
<script>{SCRIPT}</script>
</body>
</html>
""".encode()


def page(initial: bytes | None) -> bytes:
    """The page with a rendering (an /events message, or None before the first) inside it."""
    return HEAD + (initial or b"").replace(b"<", b"\\u003c") + TAIL
