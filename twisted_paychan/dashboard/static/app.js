// The paychan dashboard: the API's totals and channels, kept live from its event stream.
// Plain JavaScript, no build step and no library: it is served as it is, by the server itself.
"use strict";

const TOKEN_KEY = "paychan-api-token";
const WINDOW = 60; // seconds shown by the payments-per-second chart
const SVG_NS = "http://www.w3.org/2000/svg";
const RECENT_CHANNELS = 200; // finished channels shown beside every live one

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  info: null,
  channels: new Map(), // contract txid -> row from /v1/channels, plus expiresAt (ms, this clock)
  lastEventId: null,
  buckets: new Array(WINDOW).fill(0), // payments per second, oldest first
  bucketSecond: Math.floor(Date.now() / 1000),
  paymentsSeen: 0,
  refreshTimer: null,
  streaming: false,
};

class Unauthorized extends Error {}

const $ = (id) => document.getElementById(id);

function sats(n) {
  return n === null || n === undefined ? "-" : `${Number(n).toLocaleString("en-US")} sat`;
}

function duration(seconds) {
  if (seconds <= 0) return "expired";
  const d = Math.floor(seconds / 86400), h = Math.floor((seconds % 86400) / 3600);
  const m = Math.floor((seconds % 3600) / 60), s = Math.floor(seconds % 60);
  if (d > 0) return `${d}d ${h}h ${m}m`;
  if (h > 0) return `${h}h ${m}m ${s}s`;
  return `${m}m ${s}s`;
}

async function api(path) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${state.token}` }, cache: "no-store" });
  if (response.status === 401) throw new Unauthorized("the server refused this token");
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

// -- signing in and out ------------------------------------------------------------------------

function showLogin(message) {
  $("board").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("token").value = "";
  $("token").focus();
}

function forget(message) {
  state.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  setStatus("not connected", "");
  showLogin(message);
}

async function signIn(event) {
  event.preventDefault();
  const given = $("token").value.trim();
  if (!given) return;
  state.token = given;
  try {
    await refresh();
  } catch (e) {
    state.token = null;
    $("login-error").textContent = e instanceof Unauthorized ? "That token was refused." : `Cannot reach the API: ${e.message}`;
    $("token").value = "";
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, given);
  showBoard();
}

function showBoard() {
  $("login").hidden = true;
  $("board").hidden = false;
  $("logout").hidden = false;
  if (!state.streaming) stream();
}

// -- what the API says -------------------------------------------------------------------------

async function refresh() {
  // Every channel still in play, and the newest of the finished ones: a server that ran for
  // months holds more settled channels than a page should carry, and this runs on every event.
  const [info, live, recent] = await Promise.all([
    api("/v1/info"),
    api("/v1/channels?state=open&state=settling&state=stuck"),
    api(`/v1/channels?limit=${RECENT_CHANNELS}`),
  ]);
  const now = Date.now();
  state.info = info;
  // Oldest first, as the API lists them: a live channel outside the newest page is older than it.
  const inRecent = new Set(recent.channels.map((row) => row.contract_txid));
  const rows = [...live.channels.filter((row) => !inRecent.has(row.contract_txid)), ...recent.channels];
  state.channels = new Map(rows.map((row) => [row.contract_txid, { ...row, expiresAt: now + row.expires_in * 1000 }]));
  $("error").textContent = "";
  render();
}

function scheduleRefresh(delay = 250) {
  if (state.refreshTimer !== null) return;
  state.refreshTimer = setTimeout(async () => {
    state.refreshTimer = null;
    try {
      await refresh();
    } catch (e) {
      if (e instanceof Unauthorized) forget("The server no longer accepts this token (restarted?).");
      else $("error").textContent = e.message;
    }
  }, delay);
}

// -- the event stream: SSE read with fetch(), so the token goes in a header --------------------

function setStatus(text, kind) {
  const status = $("status");
  status.textContent = text;
  status.className = `status ${kind}`;
}

async function stream() {
  state.streaming = true;
  try {
    while (state.token) {
      try {
        const headers = { Authorization: `Bearer ${state.token}`, Accept: "text/event-stream" };
        if (state.lastEventId) headers["Last-Event-ID"] = state.lastEventId;
        const response = await fetch("/v1/events", { headers, cache: "no-store" });
        if (response.status === 401) {
          forget("The server no longer accepts this token (restarted?).");
          return;
        }
        if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
        setStatus("live", "live");
        await readEvents(response.body.getReader());
      } catch (e) {
        // a dropped connection: reconnect below, resuming from the last event id
      }
      if (!state.token) return;
      setStatus("reconnecting", "reconnecting");
      await new Promise((resolve) => setTimeout(resolve, 2000));
      scheduleRefresh(0);
    }
  } finally {
    state.streaming = false;
  }
}

async function readEvents(reader) {
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer = (buffer + decoder.decode(value, { stream: true })).replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      dispatch(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
    }
  }
}

function dispatch(block) {
  let type = "message", id = null;
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue; // a keepalive comment
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") type = value;
    else if (field === "data") data.push(value);
    else if (field === "id") id = value;
  }
  if (id !== null) state.lastEventId = id;
  if (type === "gap") scheduleRefresh(0); // events were lost: read everything again
  if (type !== "message" || data.length === 0) return;
  try {
    onEvent(JSON.parse(data.join("\n")));
  } catch (e) {
    $("error").textContent = `unreadable event: ${e.message}`;
  }
}

function onEvent(event) {
  if (event.kind === "payment") {
    countPayment();
    const row = state.channels.get(event.contract_txid);
    if (row && typeof event.total === "number") {
      row.paid = event.total;
      row.remaining = row.value - event.total;
      row.flash = Date.now();
    }
    if (state.info && typeof event.increase === "number") state.info.paid_to_us += event.increase;
    render();
    if (!row) scheduleRefresh();
    return;
  }
  scheduleRefresh(); // opened, closed, settling, settled, ...: states and totals change
}

// -- payments per second -----------------------------------------------------------------------

function advanceBuckets() {
  const second = Math.floor(Date.now() / 1000);
  const steps = Math.min(second - state.bucketSecond, WINDOW);
  for (let i = 0; i < steps; i++) {
    state.buckets.shift();
    state.buckets.push(0);
  }
  state.bucketSecond = second;
}

function countPayment() {
  advanceBuckets();
  state.buckets[WINDOW - 1] += 1;
  state.paymentsSeen += 1;
}

function drawRate() {
  advanceBuckets();
  const canvas = $("rate-chart");
  const ctx = canvas.getContext("2d");
  const width = canvas.width, height = canvas.height;
  ctx.clearRect(0, 0, width, height);
  const peak = Math.max(1, ...state.buckets);
  const bar = width / WINDOW;
  ctx.fillStyle = "#2563eb";
  state.buckets.forEach((n, i) => {
    const h = (n / peak) * (height - 20);
    ctx.fillRect(i * bar + 1, height - h, Math.max(1, bar - 2), h);
  });
  ctx.fillStyle = "#6b7280";
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillText(`peak ${peak}/s`, 6, 12);
  // the last complete second: the current one is still filling
  $("rate").textContent = String(state.buckets[WINDOW - 2]);
  $("payments-seen").textContent = String(state.paymentsSeen);
}

// -- the expiry timeline -----------------------------------------------------------------------

function svg(name, attributes, text) {
  const element = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  if (text !== undefined) element.textContent = text;
  return element;
}

function drawTimeline() {
  const timeline = $("timeline");
  const width = 600, height = 140, left = 10, right = 590;
  timeline.setAttribute("viewBox", `0 0 ${width} ${height}`);
  timeline.replaceChildren();
  const now = Date.now();
  const open = [...state.channels.values()].filter((r) => r.state === "open").sort((a, b) => a.expiresAt - b.expiresAt);
  timeline.append(svg("line", { x1: left, y1: height - 20, x2: right, y2: height - 20, stroke: "#9ca3af" }));
  if (open.length === 0) {
    timeline.append(svg("text", { x: left, y: 20, fill: "#6b7280", "font-size": 12 }, "no open channels"));
    return;
  }
  const span = Math.max(60_000, open[open.length - 1].expiresAt - now);
  timeline.append(svg("text", { x: left, y: height - 5, fill: "#6b7280", "font-size": 11 }, "now"));
  timeline.append(svg("text", { x: right, y: height - 5, fill: "#6b7280", "font-size": 11, "text-anchor": "end" },
    `+${duration(span / 1000)}`));
  open.forEach((row, i) => {
    const x = left + ((Math.max(0, row.expiresAt - now)) / span) * (right - left);
    const y = 18 + (i % 6) * 16;
    const mark = svg("g", { class: "expiry", "data-txid": row.contract_txid });
    mark.append(svg("line", { x1: x, y1: y + 4, x2: x, y2: height - 20, stroke: "#d1d5db" }));
    mark.append(svg("circle", { cx: x, cy: y, r: 4, fill: "#16a34a" }));
    const label = `${row.contract_txid.slice(0, 8)} ${duration((row.expiresAt - now) / 1000)}`;
    const anchor = x > width / 2 ? "end" : "start";
    mark.append(svg("text", { x: anchor === "end" ? x - 7 : x + 7, y: y + 4, "font-size": 11, "text-anchor": anchor,
      fill: "#1d2430" }, label));
    timeline.append(mark);
  });
}

// -- the page ----------------------------------------------------------------------------------

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function render() {
  const info = state.info;
  if (info) {
    $("server").textContent = `${info.network} · tip ${info.chain_tip ? info.chain_tip.height : "?"} · v${info.version}`;
    $("total-locked").textContent = sats(info.value_locked);
    $("total-paid").textContent = sats(info.paid_to_us);
    $("total-channels").textContent = String(info.channels);
    const states = $("states");
    states.replaceChildren();
    for (const [name, count] of Object.entries(info.channels_by_state)) {
      if (!count) continue;
      const li = document.createElement("li");
      li.dataset.state = name;
      li.className = `state-${name}`;
      li.textContent = `${name} ${count}`;
      states.append(li);
    }
  }
  const body = $("channels").tBodies[0];
  const now = Date.now();
  const rows = [...state.channels.values()].reverse(); // newest first
  body.replaceChildren(...rows.map((r) => {
    const tr = document.createElement("tr");
    tr.dataset.txid = r.contract_txid;
    if (r.flash && now - r.flash < 800) tr.className = "flash";
    const txid = cell(`${r.contract_txid.slice(0, 16)}…`, "txid");
    txid.title = r.contract_txid;
    tr.append(
      txid,
      cell(r.peer || "-", "peer"),
      cell(r.state, `state state-${r.state}`),
      cell(sats(r.value), "num value"),
      cell(sats(r.paid), "num paid"),
      cell(sats(r.remaining), "num remaining"),
      cell(r.state === "open" ? duration((r.expiresAt - now) / 1000) : "-", "expiry"),
    );
    return tr;
  }));
  $("empty").hidden = rows.length > 0;
  drawTimeline();
  drawRate();
}

function tick() {
  // expiry countdowns and the chart move every second, events or not
  const now = Date.now();
  for (const tr of $("channels").tBodies[0].rows) {
    const row = state.channels.get(tr.dataset.txid);
    if (row && row.state === "open") tr.querySelector(".expiry").textContent = duration((row.expiresAt - now) / 1000);
  }
  drawRate();
  drawTimeline();
}

document.addEventListener("DOMContentLoaded", async () => {
  $("login-form").addEventListener("submit", signIn);
  $("logout").addEventListener("click", () => forget(""));
  setInterval(() => { if (state.token && state.info) tick(); }, 1000);
  if (!state.token) {
    showLogin("");
    return;
  }
  try {
    await refresh();
  } catch (e) {
    if (e instanceof Unauthorized) forget("The server no longer accepts the saved token (restarted?).");
    else showLogin(`Cannot reach the API: ${e.message}`);
    return;
  }
  showBoard();
});
