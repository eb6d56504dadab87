// The live page: everything comes from this daemon (/ws, /api/..., /stream.mjpg), nothing from
// elsewhere. Text from the daemon goes in with textContent, never as HTML.
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token");
const MAX_EVENTS = 100;
const KEEP_SECONDS = 300;
const STAGE_COLOURS = {
  capture: "#8e44ad", hands: "#2980b9", classify: "#16a085", motion: "#d35400",
  decide: "#7f8c8d", publish: "#c0392b", vlm: "#f1c40f", end_to_end: "#e84393",
};

const $ = (id) => document.getElementById(id);
const figures = [];
const events = [];

function withToken(path, params = {}) {
  const u = new URL(path, location.href);
  for (const [k, v] of Object.entries(params)) u.searchParams.set(k, v);
  if (TOKEN) u.searchParams.set("token", TOKEN);
  return u.pathname + u.search;
}

async function getJson(path) {
  const r = await fetch(withToken(path), { cache: "no-store" });
  if (!r.ok) throw new Error(`${path}: ${r.status}`);
  return r.json();
}

function pill(el, text, good) {
  el.textContent = text;
  el.className = "pill " + (good === null ? "" : good ? "ok" : "bad");
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "–" : String(text);
  row.appendChild(td);
  return td;
}

function fill(dl, pairs) {
  dl.replaceChildren();
  for (const [k, v] of pairs) {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = v === null || v === undefined ? "–" : String(v);
    dl.append(dt, dd);
  }
}

// ---------------------------------------------------------------- the picture

function startPicture() {
  const img = $("picture");
  img.onerror = () => {
    // Busy (every viewer slot taken) or the daemon restarting: try again a little later.
    $("picture-note").textContent = "live picture unavailable; retrying…";
    setTimeout(() => { img.src = withToken("/stream.mjpg", { t: Date.now() }); }, 5000);
  };
  img.onload = () => { $("picture-note").textContent = ""; };
  img.src = withToken("/stream.mjpg");
  $("snap-overlay").href = withToken("/api/snapshot.jpg", { overlay: 1 });
  $("snap-plain").href = withToken("/api/snapshot.jpg");
}

// ---------------------------------------------------------------- hands and events

function showState(state) {
  const body = $("hands").tBodies[0];
  body.replaceChildren();
  for (const [hand, gesture] of Object.entries(state.hands || {})) {
    const tr = body.insertRow();
    cell(tr, hand);
    cell(tr, gesture || "none");
  }
  const tracks = $("tracks").tBodies[0];
  tracks.replaceChildren();
  for (const t of state.tracks || []) {
    const tr = tracks.insertRow();
    cell(tr, "#" + t.track);
    cell(tr, t.hand);
    cell(tr, t.label || "no gesture");
    cell(tr, t.confidence === null ? null : t.confidence.toFixed(2));
    cell(tr, t.source);
    cell(tr, vlmAnswer(t.vlm));
  }
  if (state.search && state.frame) $("search").textContent = searchText(state.search);
}

function vlmAnswer(v) {
  // null: [vlm] is off (the VLM box says so), or it has not answered for this hand yet.
  if (!v) return null;
  return `${v.label} ${v.probability.toFixed(2)} · ${v.age_s.toFixed(1)} s ago`;
}

function searchText(search) {
  if (search.whole_frame) return "Hand search: the whole frame (hands.backend = mediapipe).";
  const n = search.squares.length;
  return n ? `Hand search: ${n} square${n === 1 ? "" : "s"} in the latest frame (magenta on the picture).`
    : "Hand search: none in the latest frame (following the hands found).";
}

function age(ts) {
  const s = Math.max(0, (Date.now() - Date.parse(ts)) / 1000);
  return s < 60 ? `${s.toFixed(0)} s` : s < 3600 ? `${(s / 60).toFixed(0)} min` : `${(s / 3600).toFixed(1)} h`;
}

function addEvent(ev, fresh) {
  events.unshift(ev);
  events.length = Math.min(events.length, MAX_EVENTS);
  const body = $("events").tBodies[0];
  const tr = body.insertRow(0);
  if (fresh) tr.className = "new";
  cell(tr, new Date(ev.timestamp).toLocaleTimeString());
  cell(tr, ev.gesture);
  cell(tr, ev.hand);
  cell(tr, Number(ev.confidence).toFixed(2));
  cell(tr, ev.source);
  cell(tr, age(ev.timestamp)).className = "age";
  while (body.rows.length > MAX_EVENTS) body.deleteRow(-1);
}

function refreshAges() {
  const rows = $("events").tBodies[0].rows;
  for (let i = 0; i < rows.length && i < events.length; i++) {
    rows[i].cells[5].textContent = age(events[i].timestamp);
  }
}

// ---------------------------------------------------------------- figures

function showStats(stats, mqtt) {
  if (mqtt && "connected" in mqtt) pill($("mqtt"), mqtt.connected ? "MQTT connected" : "MQTT not connected", mqtt.connected);
  fill($("mqtt-figures"), Object.entries(mqtt || {}));
  const vlm = stats.vlm;
  if (!vlm) {
    fill($("vlm"), [["state", "off ([vlm] enabled = false)"]]);
  } else {
    fill($("vlm"), [
      ["state", vlm.state], ["last latency", vlm.last_latency_s == null ? null : `${(vlm.last_latency_s * 1000).toFixed(0)} ms`],
      ["error", vlm.error], ["devices", JSON.stringify(vlm.devices)], ["load", vlm.load_s == null ? null : `${vlm.load_s.toFixed(1)} s`],
    ]);
  }
}

function addFigures(rows) {
  figures.push(...rows);
  if (figures.length > KEEP_SECONDS) figures.splice(0, figures.length - KEEP_SECONDS);
  const last = figures[figures.length - 1];
  if (last) $("fps").textContent = `processed ${last.processed} frames/s · dropped ${last.dropped} frames/s · end to end ${last.end_to_end_ms ?? "–"} ms`;
  plot($("fps-plot"), [["processed", "#2a8f3a", (r) => r.processed], ["dropped", "#c0392b", (r) => r.dropped]], "frames/s");
  const stages = new Set();
  for (const r of figures) for (const s of Object.keys(r.latency_ms)) stages.add(s);
  const series = [...stages].map((s) => [s, STAGE_COLOURS[s] || "#888", (r) => r.latency_ms[s]]);
  series.push(["end_to_end", STAGE_COLOURS.end_to_end, (r) => r.end_to_end_ms]);
  plot($("latency-plot"), series, "ms");
  const legend = $("legend");
  legend.replaceChildren();
  for (const [name, colour] of series) {
    const span = document.createElement("span");
    span.textContent = "■ " + name + "  ";
    span.style.color = colour;
    legend.appendChild(span);
  }
}

function plot(canvas, series, unit) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 28;
  ctx.clearRect(0, 0, w, h);
  let top = 1;
  for (const r of figures) for (const [, , get] of series) top = Math.max(top, get(r) || 0);
  ctx.strokeStyle = "#8886";
  ctx.fillStyle = "#888";
  ctx.font = "11px sans-serif";
  ctx.beginPath();
  ctx.moveTo(pad, 4); ctx.lineTo(pad, h - 14); ctx.lineTo(w, h - 14);
  ctx.stroke();
  ctx.fillText(`${top.toFixed(top < 10 ? 1 : 0)} ${unit}`, 0, 12);
  ctx.fillText(`last ${Math.round(figures.length / 60 * 10) / 10} min`, pad + 4, h - 2);
  const x = (i) => pad + (w - pad) * (i / Math.max(KEEP_SECONDS - 1, 1)) + (w - pad) * (KEEP_SECONDS - figures.length) / KEEP_SECONDS;
  const y = (v) => (h - 14) - ((h - 20) * v) / top;
  for (const [, colour, get] of series) {
    ctx.strokeStyle = colour;
    ctx.beginPath();
    let drawing = false;
    figures.forEach((r, i) => {
      const v = get(r);
      if (v === null || v === undefined) { drawing = false; return; }
      if (drawing) ctx.lineTo(x(i), y(v)); else ctx.moveTo(x(i), y(v));
      drawing = true;
    });
    ctx.stroke();
  }
}

// ---------------------------------------------------------------- the WebSocket

let backoff = 1000;

function connect() {
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + withToken("/ws"));
  ws.onopen = () => { pill($("link"), "live", true); backoff = 1000; };
  ws.onclose = () => {
    pill($("link"), "live: reconnecting", false);
    setTimeout(connect, backoff);
    backoff = Math.min(backoff * 2, 30000);
  };
  ws.onmessage = (m) => {
    const msg = JSON.parse(m.data);
    if (msg.type === "hello") {
      $("events").tBodies[0].replaceChildren();
      events.length = 0;
      for (const ev of msg.events) addEvent(ev, false);
      showState(msg.state);
      showStats(msg.stats.stats, msg.stats.mqtt);
      figures.length = 0;
      addFigures(msg.stats.figures);
    } else if (msg.type === "event") {
      addEvent(msg.event, true);
    } else if (msg.type === "state") {
      showState(msg.state);
    } else if (msg.type === "stats") {
      showStats(msg.stats, msg.mqtt);
    } else if (msg.type === "figures") {
      addFigures(msg.figures);
    }
  };
}

async function pollHealth() {
  try {
    const r = await fetch(withToken("/healthz"), { headers: { Accept: "application/json" }, cache: "no-store" });
    const body = await r.json();
    pill($("health"), body.ok ? "healthy" : body.problems.join("; "), body.ok);
  } catch (e) {
    pill($("health"), "daemon unreachable", false);
  }
}

async function pollTracks() {
  // Tracks change every frame; once a second is enough to read them.
  try { showState(await getJson("/api/state")); } catch (e) { /* the link pill says it */ }
}

async function loadConfig() {
  try {
    const cfg = await getJson("/api/config");
    $("config").textContent = JSON.stringify(cfg, null, 2);
    $("device").textContent = cfg.device_id ? "· " + cfg.device_id : "";
  } catch (e) {
    $("config").textContent = String(e);
  }
}

startPicture();
connect();
loadConfig();
pollHealth();
setInterval(pollHealth, 5000);
setInterval(pollTracks, 1000);
setInterval(refreshAges, 1000);
