// finpulse dashboard: reads /api/ and draws with uPlot. Text goes in with textContent only.
"use strict";

const $ = (sel) => document.querySelector(sel);
const params = new URLSearchParams(location.search);
const state = { scope: params.get("scope") || "all", hours: Number(params.get("hours") || 6), charts: [] };
const utc = (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC");  // event times are shown in UTC

async function api(path) {
  const r = await fetch(path, { headers: { Accept: "application/json" } });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "–" : String(text);
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function pct(x) { return x === null || x === undefined ? "–" : (100 * x).toFixed(1) + " %"; }

function link(td, url, text) {
  if (url && /^https?:\/\//.test(url)) {
    const a = document.createElement("a");
    a.href = url; a.textContent = text; a.rel = "noopener noreferrer"; a.target = "_blank";
    td.textContent = ""; td.appendChild(a);
  }
}

function fill(tbody, rows, render) {
  tbody.textContent = "";
  for (const r of rows) { const tr = document.createElement("tr"); render(tr, r); tbody.appendChild(tr); }
}

async function loadMovers() {
  const data = await api("/api/scopes?limit=25");
  const list = $("#scope-list"); list.textContent = "";
  fill($("#movers tbody"), data.scopes, (tr, m) => {
    const td = cell(tr, m.scope, "scope-link");
    td.addEventListener("click", () => selectScope(m.scope));
    cell(tr, m.n); cell(tr, pct(m.negative_rate)); cell(tr, pct(m.baseline_rate)); cell(tr, m.score.toFixed(2));
    const opt = document.createElement("option"); opt.value = m.scope; list.appendChild(opt);
  });
}

function chartWidth() { return Math.max(360, $("#trend-panel").clientWidth - 20); }

function draw(container, opts, data) {
  container.textContent = "";
  const chart = new uPlot(opts, data, container);
  state.charts.push(chart);
  return chart;
}

async function loadSeries() {
  const data = await api(`/api/scopes/${encodeURIComponent(state.scope)}/series?hours=${state.hours}`);
  for (const c of state.charts) c.destroy();
  state.charts = [];
  const pts = data.points;
  const xs = pts.map((p) => p.t);
  const rate = pts.map((p) => (p.rate === null ? null : p.rate));
  const shortRate = pts.map((p) => (p.short_rate === null ? null : p.short_rate));
  const baseRate = pts.map((p) => (p.baseline_rate === null ? null : p.baseline_rate));
  const vol = pts.map((p) => p.n);
  const w = chartWidth();
  $("#windows-note").textContent =
    `detection window ${data.short_window_s / 60} min, baseline ${data.baseline_window_s / 3600} h` +
    (data.rules.length ? ` (rules: ${data.rules.join(", ")})` : " (no rule watches this scope)") +
    ` · step ${(data.step_s || 0) / 60} min`;
  draw($("#trend-chart"), {
    title: `${data.scope}: negative rate (UTC)`, width: w, height: 260, tzDate: utc,
    scales: { y: { range: [0, 1] } },
    axes: [{}, { values: (u, v) => v.map((x) => (100 * x).toFixed(0) + "%") }],
    series: [{}, { label: "per step", stroke: "#999", points: { show: true, size: 3 }, width: 1 },
      { label: "detection window", stroke: "#c0392b", width: 2, points: { show: true, size: 5 } },
      { label: "baseline", stroke: "#2c3e50", width: 1.5, dash: [6, 4] }],
  }, [xs, rate, shortRate, baseRate]);
  draw($("#volume-chart"), {
    title: "volume (headlines per step)", width: w, height: 140, tzDate: utc,
    series: [{}, { label: "headlines", stroke: "#2980b9", fill: "rgba(41,128,185,0.25)", paths: uPlot.paths.bars({ size: [0.9] }) }],
  }, [xs, vol]);
  $("#trend-chart").dataset.points = String(rate.filter((x) => x !== null).length);
  $("#volume-chart").dataset.points = String(vol.filter((x) => x > 0).length);
  const ul = $("#scope-alerts"); ul.textContent = "";
  for (const a of data.alerts) {
    const li = document.createElement("li");
    li.className = `alert-${a.status}`;
    li.textContent = `${a.window_end} ${a.status} ${a.severity} (${a.rule}): ${pct(a.negative_rate)} of ${a.count}`;
    ul.appendChild(li);
  }
}

async function loadHeadlines() {
  const data = await api(`/api/scopes/${encodeURIComponent(state.scope)}/headlines?limit=20`);
  fill($("#headlines tbody"), data.headlines, (tr, h) => {
    cell(tr, h.published_at); cell(tr, h.sentiment, `sent-${h.sentiment}`); cell(tr, h.topic);
    link(cell(tr, h.title), h.url, h.title); cell(tr, h.source);
  });
}

async function loadOpen() {
  const data = await api("/api/alerts/open");
  const box = $("#open-alerts"); box.textContent = "";
  if (!data.alerts.length) { box.textContent = "none"; return; }
  for (const a of data.alerts) {
    const div = document.createElement("div");
    div.className = "open-alert alert-row"; div.dataset.scope = a.scope;
    const h = document.createElement("h4");
    h.textContent = `${a.severity} · ${a.scope} · ${a.rule} · fired ${a.fired_window_end}` +
      (a.acknowledged ? ` · acknowledged by ${a.acknowledged.by}` : "") + (a.silenced ? " · silenced" : "");
    h.addEventListener("click", () => selectScope(a.scope));
    div.appendChild(h);
    const ul = document.createElement("ul");
    for (const t of (a.record && a.record.top_headlines) || []) {
      const li = document.createElement("li");
      const span = document.createElement("span"); span.textContent = `${t.published_at} `;
      li.appendChild(span);
      const td = document.createElement("span"); td.textContent = t.title; li.appendChild(td);
      if (t.url && /^https?:\/\//.test(t.url)) { li.removeChild(td); const x = document.createElement("a"); x.href = t.url; x.textContent = t.title; x.rel = "noopener noreferrer"; li.appendChild(x); }
      ul.appendChild(li);
    }
    div.appendChild(ul);
    box.appendChild(div);
  }
}

async function loadHistory(form) {
  const q = new URLSearchParams();
  for (const [k, v] of new FormData(form || $("#history-filter"))) if (v) q.set(k, v);
  q.set("limit", "200");
  const data = await api(`/api/alerts?${q}`);
  fill($("#history tbody"), data.alerts, (tr, a) => {
    tr.className = `alert-row alert-${a.status}`; tr.dataset.scope = a.scope;
    cell(tr, a.window_end); cell(tr, a.status); cell(tr, a.severity);
    const td = cell(tr, a.scope, "scope-link"); td.addEventListener("click", () => selectScope(a.scope));
    cell(tr, pct(a.negative_rate)); cell(tr, a.count); cell(tr, a.rule);
  });
}

async function loadHealth() {
  const h = await api("/api/health");
  $("#namespace").textContent = `namespace ${h.namespace}`;
  $("#event-time").textContent = `event time ${h.event_time || "–"}`;
  $("#throughput").textContent = `${h.headlines_per_min_15m ?? "–"} headlines/min (15 min)`;
  const lags = Object.entries(h.backlog_seconds_at_current_rate).map(([t, s]) => `${t}: ${s === null ? "?" : s + " s"}`);
  $("#lag").textContent = lags.length ? `backlog ${lags.join(", ")}` : "backlog –";
  const rows = Object.entries(h.counters).concat(Object.entries(h.backlog_messages).map(([t, n]) => [`backlog ${t}`, n]));
  fill($("#counters tbody"), rows, (tr, [k, v]) => { cell(tr, k); cell(tr, v); });
  fill($("#dead-letters tbody"), Object.entries(h.dead_letters_by_reason), (tr, [k, v]) => { cell(tr, k); cell(tr, v); });
}

async function loadModel() {
  const m = await api("/api/model");
  const lc = m.lifecycle;
  const agree = lc.shadow_agreement && lc.shadow_agreement.n
    ? `; shadow ${lc.shadow}: ${(100 * lc.shadow_agreement.sentiment_agreement).toFixed(1)} % sentiment / ` +
      `${(100 * lc.shadow_agreement.topic_agreement).toFixed(1)} % topic agreement on ${lc.shadow_agreement.n} headlines`
    : (lc.shadow ? `; shadow ${lc.shadow}: nothing compared yet` : "");
  $("#model-version").textContent = `model ${m.version || "–"} (in force: ${lc.in_force}${agree})`;
  if (!m.report) { $("#model").textContent = "no predictions yet"; return; }
  const ref = m.report.reference;
  $("#model").textContent = `version ${m.version}; reference: ${ref.frozen ? ref.n + " headlines" : "being collected (" + ref.n + ")"}; ` +
    `recent ${m.report.window_hours} h: ${m.report.n_current} headlines`;
  fill($("#drift tbody"), Object.entries(m.report.kinds), (tr, [k, v]) => { cell(tr, k); cell(tr, v.psi.toFixed(3)); cell(tr, v.status, `drift-${v.status}`); });
}

function selectScope(scope) {
  state.scope = scope; $("#scope").value = scope;
  history.replaceState(null, "", `?scope=${encodeURIComponent(scope)}&hours=${state.hours}`);
  return Promise.all([loadSeries(), loadHeadlines()]).catch(showError);
}

function showError(e) { console.error(e); document.body.dataset.error = String(e); }

async function refresh() {
  await Promise.all([loadHealth(), loadMovers(), loadOpen(), loadHistory(), loadModel(), loadSeries(), loadHeadlines()])
    .catch(showError);
  document.body.dataset.loaded = "1";
}

$("#scope").value = state.scope;
$("#hours").value = String(state.hours);
$("#scope").addEventListener("change", (e) => selectScope(e.target.value.trim() || "all"));
$("#hours").addEventListener("change", (e) => { state.hours = Number(e.target.value); loadSeries().catch(showError); });
$("#history-filter").addEventListener("submit", (e) => { e.preventDefault(); loadHistory(e.target).catch(showError); });
refresh();
setInterval(refresh, 15000);
