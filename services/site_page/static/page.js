// The live site page: draws every snapshot the server streams (Server-Sent Events).
// Everything from the bus is untrusted: it goes into the page as text (textContent,
// setAttribute of numbers), never as markup, so an asset id or a reason cannot inject anything.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
window.qubitPage = { loadedAt: Date.now(), snapshots: 0 };  // the browser test checks the page never reloads

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function kw(v) { return v === null || v === undefined ? "—" : Number(v).toFixed(1); }
function time(iso) { return iso ? new Date(iso).toLocaleTimeString() : "—"; }
function safeClass(prefix, word) { return prefix + String(word || "").replace(/[^A-Za-z0-9_]/g, ""); }

function rows(tableId, items, cells) {
  const body = document.querySelector("#" + tableId + " tbody");
  const fresh = document.createElement("tbody");
  for (const item of items) {
    const tr = document.createElement("tr");
    for (const cell of cells(item)) tr.appendChild(cell);
    fresh.appendChild(tr);
  }
  body.replaceWith(fresh);
}

function assetRow(a) {
  const tr = [el("td", a.asset_id), el("td", a.kind), el("td", a.state || "unknown", safeClass("state-", a.state)),
              el("td", kw(a.setpoint_kw)), el("td", kw(a.power_kw)),
              el("td", a.soc_percent === null ? "—" : Number(a.soc_percent).toFixed(0)), el("td", time(a.since))];
  tr[2].dataset.asset = a.asset_id;  // dataset is an attribute value: text, never markup
  return tr;
}

function commandRow(c) {
  return [el("td", c.command_id), el("td", c.asset_id), el("td", c.command_type), el("td", kw(c.power_kw)),
          el("td", time(c.scheduled_at)), el("td", c.status, safeClass("status-", c.status)),
          el("td", c.steps.map(s => s[0].toLowerCase()).join(" → "), "wrap"), el("td", c.error || "", "wrap")];
}

function serviceRow(s) {
  return [el("td", s.service), el("td", s.status, safeClass("status-", s.status)),
          el("td", s.emergency_stop ? s.lifecycle + " (emergency stop)" : s.lifecycle), el("td", s.operational),
          el("td", s.health, safeClass("health-", s.health)), el("td", s.reasons.join("; "), "wrap")];
}

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

// Step line: a setpoint holds until the next one.
function stepPath(points, x, y, until) {
  if (!points.length) return "";
  let d = "";
  points.forEach(([t, v], i) => {
    const px = x(t), py = y(v);
    d += i === 0 ? `M${px},${py}` : `H${px}V${py}`;
  });
  return d + `H${x(until)}`;
}

function linePath(points, x, y) {
  return points.map(([t, v], i) => `${i ? "L" : "M"}${x(t)},${y(v)}`).join("");
}

function plot(a, schedule, now) {
  const W = 420, H = 150, L = 40, R = 8, T = 8, B = 20;
  const series = { planned: a.planned.map(([t, v]) => [Date.parse(t), v]),
                   applied: a.applied.map(([t, v]) => [Date.parse(t), v]),
                   measured: a.measured.map(([t, v]) => [Date.parse(t), v]) };
  const times = [now, ...Object.values(series).flat().map(p => p[0])];
  if (schedule && schedule.starts_at) times.push(Date.parse(schedule.starts_at));
  if (schedule && schedule.ends_at) times.push(Date.parse(schedule.ends_at));
  const t0 = Math.min(...times), t1 = Math.max(...times, t0 + 30000);
  // The schedule's last setpoint holds to its end (or the plot's, when the end is not known).
  const ends = schedule && schedule.ends_at ? Date.parse(schedule.ends_at) : t1;
  const values = Object.values(series).flat().map(p => p[1]);
  const top = Math.max(1, ...values), bottom = Math.min(0, ...values);
  const x = t => (L + (t - t0) / (t1 - t0) * (W - L - R)).toFixed(1);
  const y = v => (T + (top - v) / (top - bottom) * (H - T - B)).toFixed(1);
  const g = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img" });
  g.appendChild(svg("line", { x1: L, x2: W - R, y1: y(0), y2: y(0), class: "axis" }));
  g.appendChild(svg("line", { x1: L, x2: L, y1: T, y2: H - B, class: "axis" }));
  for (const [v, label] of [[top, kw(top)], [bottom, kw(bottom)]]) {
    const t = svg("text", { x: 2, y: Number(y(v)) + 4 }); t.textContent = label + " kW"; g.appendChild(t);
  }
  for (const [tt, anchor] of [[t0, "start"], [t1, "end"]]) {
    const t = svg("text", { x: anchor === "start" ? L : W - R, y: H - 5, "text-anchor": anchor });
    t.textContent = new Date(tt).toLocaleTimeString(); g.appendChild(t);
  }
  const paths = { planned: stepPath(series.planned, x, y, Math.max(ends, ...series.planned.map(p => p[0]))), applied: stepPath(series.applied, x, y, now),
                  measured: linePath(series.measured, x, y) };
  for (const [name, d] of Object.entries(paths)) {
    if (d) g.appendChild(svg("path", { d, class: name, "data-series": name }));
  }
  const fig = el("figure");
  fig.appendChild(el("figcaption", a.asset_id));
  fig.appendChild(g);
  return fig;
}

function draw(s) {
  window.qubitPage.snapshots += 1;
  document.getElementById("site-id").textContent = s.site_id;
  const link = document.getElementById("link");
  link.textContent = s.broker_connected ? "broker connected" : "broker NOT connected";
  link.className = "badge " + (s.broker_connected ? "ok" : "bad");
  const e = s.emergency_stop, estop = document.getElementById("estop");
  estop.textContent = e.active ? `EMERGENCY STOP — ${e.reason || "(services report it)"}${e.issued_by ? " by " + e.issued_by : ""}`
                               : "emergency stop: not active";
  estop.className = "badge " + (e.active ? "bad" : "ok");
  rows("assets", s.assets, assetRow);
  rows("commands", s.commands, commandRow);
  rows("services", s.services, serviceRow);
  const sch = s.schedule;
  document.getElementById("schedule").textContent = sch
    ? `${sch.schedule_id}: ${sch.slot_count} slots, ${time(sch.starts_at)} – ${time(sch.ends_at)}` : "(no schedule yet)";
  const plots = document.getElementById("plots"), now = Date.now();
  plots.replaceChildren(...s.assets.map(a => plot(a, sch, now)));
  document.getElementById("footer").textContent =
    `live · last update ${new Date().toLocaleTimeString()} · ${s.ignored + s.refused} messages ignored (unknown assets or unreadable)`;
}

function connect() {
  const source = new EventSource("/api/stream");
  source.addEventListener("snapshot", m => draw(JSON.parse(m.data)));
  source.onerror = () => {  // EventSource reconnects by itself; say so meanwhile
    const link = document.getElementById("link");
    link.textContent = "page server unreachable, retrying…"; link.className = "badge bad";
  };
}

connect();
