// recon-service review tool: worklist, synced multi-pane viewer, approve / reject. Our own code, no dependency.
"use strict";

const state = {
  token: sessionStorage.getItem("recon-token") || "",
  sort: "-created",
  job: null,           // the open job (GET /v1/jobs/{id})
  panes: [],           // pane descriptions (GET /v1/jobs/{id}/panes)
  shown: [],           // names of the panes on screen (2 to 4)
  slice: 0,
  zoom: 1, panX: 0, panY: 0,
  window: 1, level: 0, // relative: width factor and centre shift in units of each pane's default width
  preset: "default",
  difference: false,
};
const cache = new Map();                 // "job/pane/slice" -> Float32Array: a slice is fetched once
window.reviewStats = { fetched: 0, keys: [], firstImageMs: null };  // what tests and benchmarks read
let refreshTimer = null;

const $ = (id) => document.getElementById(id);

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: `Bearer ${state.token}` }, options.headers || {});
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail; } catch (e) { /* not JSON */ }
    const error = new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
    error.status = response.status;
    throw error;
  }
  return response;
}

// ---- sign-in ------------------------------------------------------------------------------------------------

function show(section) {
  for (const id of ["sign-in", "worklist", "viewer"]) $(id).hidden = id !== section;
  $("sign-out").hidden = section === "sign-in";
}

async function signIn(token) {
  state.token = token;
  try {
    await api("/v1/review/worklist?limit=1");
  } catch (error) {
    $("sign-in-error").textContent = error.status === 401 ? "This token is not valid." :
      error.status === 403 ? "This token may not read jobs (it needs the jobs:read scope)." : error.message;
    state.token = "";
    return;
  }
  sessionStorage.setItem("recon-token", token);
  $("sign-in-error").textContent = "";
  openWorklist();
}

function signOut() {
  sessionStorage.removeItem("recon-token");
  state.token = "";
  clearInterval(refreshTimer);
  show("sign-in");
}

// ---- worklist -----------------------------------------------------------------------------------------------

function badge(text) {
  const span = document.createElement("span");
  span.className = `badge ${text}`;
  span.textContent = text;
  return span;
}

async function loadWorklist() {
  const query = new URLSearchParams({ sort: state.sort, limit: "200" });
  if ($("f-state").value) query.set("state", $("f-state").value);
  if ($("f-review").value) query.set("review", $("f-review").value);
  if ($("f-pipeline").value.trim()) query.set("pipeline", $("f-pipeline").value.trim());
  if ($("f-learned").checked) query.set("learned", "true");
  let items;
  try {
    items = await (await api(`/v1/review/worklist?${query}`)).json();
  } catch (error) {
    $("worklist-error").textContent = error.message;
    return;
  }
  $("worklist-error").textContent = "";
  const body = $("jobs").querySelector("tbody");
  body.replaceChildren(...items.map((item) => {
    const row = document.createElement("tr");
    row.dataset.job = item.id;
    const cells = [
      `${item.patient_name || "(no name)"}\n${item.patient_id || ""}`,
      `${item.study_description || ""} ${item.accession_number || ""}`.trim(),
      item.pipeline, item.model_id || "", null, null, null, new Date(item.created_at).toLocaleString(),
    ];
    cells.forEach((text, i) => {
      const cell = document.createElement("td");
      if (i === 4) {
        cell.append(badge(item.state));
        if (item.flagged) {  // out of distribution: the reviewer sees it before opening the job
          const flag = badge("out-of-distribution");
          flag.title = item.flags.join("; ");
          cell.append(" ", flag);
        }
      }
      else if (i === 5) cell.append(badge(item.review));
      else if (i === 6) for (const [name, s] of Object.entries(item.deliveries)) cell.append(badge(`${s}`), ` ${name} `);
      else cell.textContent = text;
      row.append(cell);
    });
    row.addEventListener("click", () => openJob(item.id));
    return row;
  }));
  $("refreshed").textContent = `${items.length} jobs, updated ${new Date().toLocaleTimeString()}`;
}

function openWorklist() {
  show("worklist");
  loadWorklist();
  clearInterval(refreshTimer);
  refreshTimer = setInterval(() => { if (!$("worklist").hidden) loadWorklist(); }, 3000);  // live
}

// ---- viewer -------------------------------------------------------------------------------------------------

function paneInfo(name) { return state.panes.find((p) => p.name === name); }

async function slice(name, index) {
  const key = `${state.job.id}/${name}/${index}`;
  if (!cache.has(key)) {
    cache.set(key, api(`/v1/jobs/${state.job.id}/panes/${name}/${index}`)
      .then((r) => r.arrayBuffer()).then((b) => {
        window.reviewStats.fetched += 1;
        window.reviewStats.keys.push(key);
        return new Float32Array(b);
      }));
  }
  return cache.get(key);
}

function defaultWindow(info) {
  const width = Math.max(info.p99 - info.p01, 1e-12);
  switch (state.preset) {
    case "full": return [info.minimum, Math.max(info.maximum - info.minimum, 1e-12)];
    case "narrow": return [info.p01 + width / 2, width / 2];
    case "wide": return [info.p01 + width / 2, width * 2];
    default: return [info.p01 + width / 2, width];
  }
}

function windowFor(info, difference) {
  if (difference) {
    const w = Math.max(info.p99 - info.p01, 1e-12) * 0.5 * state.window;
    return [0, w];
  }
  const [centre, width] = defaultWindow(info);
  return [centre + state.level * width, width * state.window];
}

function paint(canvas, values, rows, columns, centre, width) {
  const image = new ImageData(columns, rows);
  const low = centre - width / 2;
  for (let i = 0; i < values.length; i += 1) {
    const v = Math.max(0, Math.min(255, ((values[i] - low) / width) * 255));
    image.data[4 * i] = image.data[4 * i + 1] = image.data[4 * i + 2] = v;
    image.data[4 * i + 3] = 255;
  }
  canvas.getContext("2d").putImageData(image, 0, 0);
}

function layoutPanes() {
  const names = [...state.shown];
  if (state.difference) names.push("difference");
  $("panes").style.setProperty("--columns", String(Math.min(names.length, 2 + (names.length > 4 ? 1 : 0))));
  $("panes").replaceChildren(...names.map((name) => {
    const box = document.createElement("div");
    box.className = "pane";
    box.dataset.pane = name;
    const label = document.createElement("span");
    label.className = "label";
    const base = paneInfo(state.shown[0]);
    label.textContent = name === "difference" ? `difference: ${diffPair().join(" - ")}` : paneInfo(name).label;
    const canvas = document.createElement("canvas");
    const info = name === "difference" ? base : paneInfo(name);
    canvas.width = info.columns;
    canvas.height = info.rows;
    box.append(label, canvas);
    attachInteraction(box);
    return box;
  }));
  render();
}

function diffPair() {
  const other = ["reference", "classical", "zero-filled"].find((n) => paneInfo(n));
  return ["recon", other || "recon"];
}

async function render() {
  const started = performance.now();
  $("slice-label").textContent = `slice ${state.slice + 1} / ${paneInfo("recon").slices}`;
  $("wl-label").textContent = `window x${state.window.toFixed(2)} level ${state.level >= 0 ? "+" : ""}${state.level.toFixed(2)}`;
  const boxes = [...$("panes").children];
  await Promise.all(boxes.map(async (box) => {
    const name = box.dataset.pane;
    const canvas = box.querySelector("canvas");
    const info = paneInfo(name === "difference" ? "recon" : name);
    let values;
    if (name === "difference") {
      const [a, b] = diffPair();
      const [x, y] = await Promise.all([slice(a, state.slice), slice(b, state.slice)]);
      values = x.map((v, i) => v - y[i]);
    } else {
      values = await slice(name, state.slice);
    }
    const [centre, width] = windowFor(info, name === "difference");
    paint(canvas, values, info.rows, info.columns, centre, width);
    const fit = Math.min(box.clientWidth / info.columns, box.clientHeight / info.rows);
    canvas.style.transform = `translate(-50%, -50%) translate(${state.panX}px, ${state.panY}px) scale(${fit * state.zoom})`;
  }));
  if (window.reviewStats.firstImageMs === null) window.reviewStats.firstImageMs = performance.now() - state.openedAt;
  window.reviewStats.lastRenderMs = performance.now() - started;
  prefetch();
}

function prefetch() {
  const total = paneInfo("recon").slices;
  for (const step of [1, -1, 2]) {
    const index = state.slice + step;
    if (index >= 0 && index < total) for (const name of state.shown) slice(name, index);
  }
}

function setSlice(index) {
  const total = paneInfo("recon").slices;
  const next = Math.max(0, Math.min(total - 1, index));
  if (next !== state.slice) { state.slice = next; render(); }
}

function attachInteraction(box) {
  box.addEventListener("wheel", (event) => {
    event.preventDefault();
    if (event.ctrlKey) zoomBy(event.deltaY < 0 ? 1.25 : 0.8);
    else setSlice(state.slice + Math.sign(event.deltaY));
  }, { passive: false });
  box.addEventListener("mousedown", (event) => {
    const startX = event.clientX, startY = event.clientY;
    const { window: w0, level: l0, panX: x0, panY: y0 } = state;
    const pan = event.shiftKey || event.button !== 0;
    const move = (e) => {
      const dx = e.clientX - startX, dy = e.clientY - startY;
      if (pan) { state.panX = x0 + dx; state.panY = y0 + dy; }
      else { state.window = Math.max(0.02, w0 * Math.exp(dx / 200)); state.level = l0 - dy / 300; }
      render();
    };
    const up = () => { removeEventListener("mousemove", move); removeEventListener("mouseup", up); };
    addEventListener("mousemove", move);
    addEventListener("mouseup", up);
    event.preventDefault();
  });
  box.addEventListener("contextmenu", (e) => e.preventDefault());
}

function zoomBy(factor) {
  state.zoom = Math.max(0.25, Math.min(16, state.zoom * factor));
  render();
}

function resetView() {
  Object.assign(state, { zoom: 1, panX: 0, panY: 0, window: 1, level: 0 });
  render();
}

function choosePanes() {
  const box = $("pane-choice");
  box.replaceChildren(...state.panes.map((info) => {
    const label = document.createElement("label");
    const input = document.createElement("input");
    input.type = "checkbox";
    input.value = info.name;
    input.checked = state.shown.includes(info.name);
    input.disabled = info.name === "recon";
    input.addEventListener("change", () => {
      const chosen = [...box.querySelectorAll("input:checked")].map((i) => i.value);
      if (chosen.length < 2 || chosen.length > 4) { input.checked = !input.checked; return; }
      state.shown = chosen;
      layoutPanes();
    });
    label.append(input, ` ${info.name} `);
    return label;
  }));
}

function fillTable(table, rows) {
  table.replaceChildren(...rows.map(([key, value]) => {
    const row = document.createElement("tr");
    const k = document.createElement("td"), v = document.createElement("td");
    k.textContent = key;
    v.textContent = value === null || value === undefined ? "" : String(value);
    row.append(k, v);
    return row;
  }));
}

function showJobDetails() {
  const job = state.job;
  const p = job.provenance || {};
  fillTable($("metrics"), job.metrics ? Object.entries(job.metrics).map(([k, v]) => [k.toUpperCase(),
    typeof v === "number" ? v.toFixed(4) : v]) : [["", "no reference in the input"]]);
  fillTable($("provenance"), [["pipeline", p.pipeline], ["method", p.method], ["model", p.model_id],
    ["weights SHA-256", p.weights_sha256], ["engine", p.engine_provider],
    ["seconds", p.reconstruction_seconds && Number(p.reconstruction_seconds).toFixed(2)]]);
  fillTable($("deliveries"), (job.deliveries || []).map((d) => [d.destination, d.state]));
  $("flag").hidden = !job.flagged;
  $("flag").textContent = job.flagged ?
    `Out of distribution: ${job.flags.join("; ")}. Not delivered to the PACS without your approval.` : "";
  const report = p.consistency_report;
  $("consistency-box").hidden = !report;
  if (report) {
    const pct = (v) => (typeof v === "number" ? `${(100 * v).toFixed(1)}%` : "");
    fillTable($("consistency"), [
      ["data residual (x noise, expected 1)", report.residual_network && report.residual_network.toFixed(2)],
      ["largest over slices", report.residual_network_max && report.residual_network_max.toFixed(2)],
      ["after consistency step", typeof report.residual === "number" ? report.residual.toFixed(2) : "off"],
      [`disagreement with ${report.baseline}`, pct(report.disagreement)],
      ...(report.uncertainty ? [["uncertainty (mean, p99)",
        `${pct(report.uncertainty.mean)}, ${pct(report.uncertainty.p99)}`]] : []),
      ["check", report.calibrated ? (report.flagged ? "flagged" : "within the calibrated range") :
        "not calibrated for this model"],
    ]);
  }
  const decided = job.review;
  $("decision-form").hidden = Boolean(decided);
  $("decided").textContent = decided ?
    `${decided.decision} by ${decided.reviewer} at ${new Date(decided.decided_at).toLocaleString()}` +
    (decided.comment ? `: "${decided.comment}"` : "") : "";
  $("decided").className = decided ? `badge ${decided.decision}` : "";
}

async function openJob(id) {
  clearInterval(refreshTimer);
  state.openedAt = performance.now();
  window.reviewStats.firstImageMs = null;
  try {
    state.job = await (await api(`/v1/jobs/${id}`)).json();
    state.panes = await (await api(`/v1/jobs/${id}/panes`)).json();
  } catch (error) {
    $("worklist-error").textContent = error.message;
    openWorklist();
    return;
  }
  const names = state.panes.map((p) => p.name);
  const second = ["reference", "classical", "zero-filled", "uncertainty"].find((n) => names.includes(n));
  state.shown = second ? ["recon", second] : ["recon"];
  Object.assign(state, { slice: Math.floor(paneInfo("recon").slices / 2), zoom: 1, panX: 0, panY: 0, window: 1,
    level: 0, difference: false });
  $("difference").checked = false;
  $("job-title").textContent = `${state.job.study.PatientName || ""} ${state.job.pipeline} (${id.slice(0, 8)})`;
  $("decision-error").textContent = "";
  $("comment").value = "";
  show("viewer");
  choosePanes();
  showJobDetails();
  layoutPanes();
}

async function decide(decision) {
  $("decision-error").textContent = "";
  try {
    await api(`/v1/jobs/${state.job.id}/review`, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ decision, comment: $("comment").value }),
    });
  } catch (error) {
    $("decision-error").textContent = error.status === 403 ?
      "This token cannot approve or reject (it needs the review scope)." : error.message;
    return;
  }
  state.job = await (await api(`/v1/jobs/${state.job.id}`)).json();
  showJobDetails();
}

// ---- wiring -------------------------------------------------------------------------------------------------

$("sign-in-form").addEventListener("submit", (e) => { e.preventDefault(); signIn($("token").value.trim()); });
$("sign-out").addEventListener("click", signOut);
for (const id of ["f-state", "f-review", "f-learned"]) $(id).addEventListener("change", loadWorklist);
$("f-pipeline").addEventListener("input", loadWorklist);
for (const th of document.querySelectorAll("th[data-sort]")) {
  th.addEventListener("click", () => { state.sort = th.dataset.sort; loadWorklist(); });
}
$("back").addEventListener("click", openWorklist);
$("difference").addEventListener("change", (e) => { state.difference = e.target.checked; layoutPanes(); });
$("preset").addEventListener("change", (e) => { state.preset = e.target.value; state.window = 1; state.level = 0; render(); });
$("zoom-in").addEventListener("click", () => zoomBy(1.25));
$("zoom-out").addEventListener("click", () => zoomBy(0.8));
$("reset").addEventListener("click", resetView);
$("approve").addEventListener("click", () => decide("approve"));
$("reject").addEventListener("click", () => decide("reject"));
document.addEventListener("keydown", (event) => {
  const typing = ["TEXTAREA", "SELECT"].includes(event.target.tagName) ||
    (event.target.tagName === "INPUT" && event.target.type !== "checkbox");
  if ($("viewer").hidden || typing) return;
  const keys = { ArrowUp: -1, ArrowLeft: -1, ArrowDown: 1, ArrowRight: 1, PageUp: -5, PageDown: 5 };
  if (event.key in keys) { setSlice(state.slice + keys[event.key]); event.preventDefault(); }
  else if (event.key === "Home") setSlice(0);
  else if (event.key === "End") setSlice(paneInfo("recon").slices - 1);
  else if (event.key === "+" || event.key === "=") zoomBy(1.25);
  else if (event.key === "-") zoomBy(0.8);
  else if (event.key === "r") resetView();
});

if (state.token) signIn(state.token); else show("sign-in");
