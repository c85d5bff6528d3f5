// vaekit explore: the page over the JSON API (docs/explore.md).  Plain JavaScript, no libraries.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG_NS = "http://www.w3.org/2000/svg";
const MAP_SIZE = 600, MAP_PAD = 10, AXIS_ROOM = 14, MAX_DIM_SLIDERS = 64;
// Tableau 10 and a few more: categories beyond them get hues spaced by the golden angle.
const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
                 "#9c755f", "#bab0ac", "#1f77b4", "#17becf"];
// magma (as the run's PNG figures), low to high.
const MAGMA = [[0, 0, 4], [28, 16, 68], [79, 18, 123], [129, 37, 129], [181, 54, 122], [229, 80, 100],
               [251, 135, 97], [254, 194, 135], [252, 253, 191]];
const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

// Everything the page knows; tests and the browser console read it as window.explore.
const state = {
  info: null, points: [], byIndex: new Map(), colourKind: null,
  selected: null, endB: null,
  z: null, mode: "pcs", residual: null, label: null,
  current: null, currentUrl: null, inFlight: false, pending: false, decodes: 0,
};
window.explore = state;

function status(text, isError = false) {
  const el = $("status");
  el.textContent = text;
  el.className = isError ? "error" : "";
}

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
  const response = await fetch(path, options);
  if (!response.ok) {
    let message = `${path}: HTTP ${response.status}`;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

// -- colours ----------------------------------------------------------------------
function ramp(stops, t) {
  t = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(t)), f = t - i;
  return stops[i].map((c, k) => Math.round(c + f * (stops[i + 1][k] - c)));
}

function labelOf(point, kind) {
  return kind === state.points.label_kind ? point.label : point.labels[kind];
}

function colourer(kind) {
  const values = state.points.points.map((p) => labelOf(p, kind));
  if (values.every((v) => typeof v === "number")) {
    const lo = Math.min(...values), hi = Math.max(...values), span = hi - lo || 1;
    const colour = (v) => `rgb(${ramp(VIRIDIS, (v - lo) / span).join(",")})`;
    return {colour, legend: {kind: "range", lo, hi, colour}};
  }
  const cats = [...new Set(values)].sort((a, b) => String(a).localeCompare(String(b), undefined, {numeric: true}));
  const index = new Map(cats.map((c, i) => [c, i]));
  const colour = (v) => {
    const i = index.get(v);
    return i < PALETTE.length ? PALETTE[i] : `hsl(${(i * 137.508) % 360}, 65%, 50%)`;
  };
  return {colour, legend: {kind: "categories", cats, colour}};
}

// -- the map ----------------------------------------------------------------------
function drawMap() {
  const svg = $("map");
  svg.replaceChildren();
  const pts = state.points.points;
  const xs = pts.map((p) => p.x), ys = pts.map((p) => p.y);
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
  // Each axis fills the map (PC1 often spreads far wider than PC2); the axis labels say each one's share.
  const inner = MAP_SIZE - 2 * MAP_PAD - AXIS_ROOM;
  const sx = inner / Math.max(x1 - x0, 1e-9), sy = inner / Math.max(y1 - y0, 1e-9);
  const ox = MAP_PAD + AXIS_ROOM + (x1 > x0 ? 0 : inner / 2), oy = MAP_PAD + AXIS_ROOM + (y1 > y0 ? 0 : inner / 2);
  const radius = pts.length > 1500 ? 2.5 : pts.length > 300 ? 3.5 : 5;
  const frame = document.createElementNS(SVG_NS, "rect");
  frame.setAttribute("class", "frame");
  frame.setAttribute("width", MAP_SIZE);
  frame.setAttribute("height", MAP_SIZE);
  svg.append(frame);
  const share = state.info.pcs.variance_share;
  for (const [k, x, y, rotate] of [[0, MAP_SIZE / 2, MAP_SIZE - 4, false], [1, 12, MAP_SIZE / 2, true]]) {
    const label = document.createElementNS(SVG_NS, "text");
    label.setAttribute("class", "axis");
    label.setAttribute("x", x);
    label.setAttribute("y", y);
    label.setAttribute("text-anchor", "middle");
    if (rotate) label.setAttribute("transform", `rotate(-90 ${x} ${y})`);
    label.textContent = share.length > k ? `PC${k + 1} of μ (${(100 * share[k]).toFixed(share[k] < 0.1 ? 1 : 0)} % of the variance)` : "";
    svg.append(label);
  }
  for (const p of pts) {
    const c = document.createElementNS(SVG_NS, "circle");
    c.setAttribute("class", "pt");
    c.setAttribute("cx", (ox + sx * (p.x - x0)).toFixed(2));
    c.setAttribute("cy", (MAP_SIZE - oy - sy * (p.y - y0)).toFixed(2));
    c.setAttribute("r", radius);
    c.dataset.index = p.index;
    const title = document.createElementNS(SVG_NS, "title");
    title.textContent = p.name;
    c.append(title);
    svg.append(c);
    p.element = c;
  }
  colourMap(state.colourKind);
}

function colourMap(kind) {
  state.colourKind = kind;
  const {colour, legend} = colourer(kind);
  for (const p of state.points.points) p.element.setAttribute("fill", colour(labelOf(p, kind)));
  const box = $("legend");
  box.replaceChildren();
  if (legend.kind === "range") {
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.background = `linear-gradient(to right, ${VIRIDIS.map((c) => `rgb(${c})`).join(",")})`;
    box.append(`${kind}: ${legend.lo.toFixed(2)} `, bar, ` ${legend.hi.toFixed(2)}`);
    return;
  }
  box.append(`${kind}: `);
  for (const cat of legend.cats.slice(0, 40)) {
    const item = document.createElement("span");
    item.className = "item";
    const swatch = document.createElement("i");
    swatch.style.background = legend.colour(cat);
    item.append(swatch, String(cat === "" ? "(top level)" : cat));
    box.append(item);
  }
  if (legend.cats.length > 40) box.append(` … ${legend.cats.length - 40} more`);
}

function showTooltip(event) {
  const target = event.target;
  const tip = $("tooltip");
  if (!target.classList || !target.classList.contains("pt")) { tip.hidden = true; return; }
  const p = state.byIndex.get(Number(target.dataset.index));
  const label = labelOf(p, state.colourKind);
  tip.textContent = `${p.name} · ${state.colourKind}: ${label} · error ${p.error_db.toFixed(2)} dB`;
  const box = $("map-panel").getBoundingClientRect();
  tip.style.left = `${event.clientX - box.left + 12}px`;
  tip.style.top = `${event.clientY - box.top + 12}px`;
  tip.hidden = false;
}

// -- a clip -----------------------------------------------------------------------
function drawSpectrogram(canvas, rows) {
  const [lo, hi] = state.info.db_range, span = hi - lo || 1;
  const bands = rows.length, frames = rows[0].length;
  const image = new ImageData(frames, bands);
  for (let b = 0; b < bands; b++) {
    for (let f = 0; f < frames; f++) {
      const [r, g, bl] = ramp(MAGMA, (rows[b][f] - lo) / span);
      const o = 4 * ((bands - 1 - b) * frames + f);  // low bands at the bottom
      image.data.set([r, g, bl, 255], o);
    }
  }
  const small = document.createElement("canvas");
  small.width = frames;
  small.height = bands;
  small.getContext("2d").putImageData(image, 0, 0);
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(small, 0, 0, canvas.width, canvas.height);
}

function play(audio) {
  const started = audio.play();
  if (started) started.catch(() => { /* autoplay refused before a gesture: the controls still play it */ });
}

async function selectClip(index) {
  status(`loading clip ${index}…`);
  let clip;
  try {
    clip = await (await api(`/api/clip/${index}`)).json();
  } catch (e) { status(e.message, true); return; }
  if (state.selected !== null) state.byIndex.get(state.selected).element.classList.remove("selected");
  state.selected = index;
  const mark = state.byIndex.get(index).element;
  mark.classList.add("selected");
  mark.parentNode.append(mark);  // drawn last: on top of its neighbours
  $("clip-name").textContent = clip.name;
  $("clip-meta").textContent = `test clip ${clip.index} · ${state.points.label_kind}: ${clip.label} · `
    + `reconstruction error ${clip.error_db.toFixed(2)} dB`;
  $("end-a").textContent = clip.name;
  if (clip.condition != null) { state.label = clip.condition; $("label").value = clip.condition; }
  drawSpectrogram($("spec-original"), clip.spectrogram.original);
  drawSpectrogram($("spec-reconstruction"), clip.spectrogram.reconstruction);
  const original = $("audio-original"), recon = $("audio-reconstruction");
  original.src = clip.wav.original;
  recon.src = clip.wav.reconstruction;
  original.onended = () => { original.onended = null; play(recon); };
  play(original);
  state.z = clip.z.slice();
  buildSliders();
  setCurrent(clip.wav.reconstruction, {clip: index, part: "reconstruction"}, `reconstruction of ${clip.name}`, false);
  $("play-interp").disabled = state.endB === null;
  status("");
}

function setEndB(index) {
  if (state.endB !== null) state.byIndex.get(state.endB).element.classList.remove("end-b");
  state.endB = index;
  const p = state.byIndex.get(index);
  p.element.classList.add("end-b");
  $("end-b").textContent = p.name;
  $("play-interp").disabled = state.selected === null;
}

// -- the current sound: decoded, interpolated or a clip's ---------------------------
function setCurrent(url, body, what, autoplay = true) {
  if (state.currentUrl && state.currentUrl.startsWith("blob:")) URL.revokeObjectURL(state.currentUrl);
  state.currentUrl = url;
  state.current = body;
  const audio = $("audio-current");
  audio.src = url;
  if (autoplay) play(audio);
  const link = $("download");
  link.href = url;
  link.classList.remove("disabled");
  $("keep").disabled = false;
  $("current-what").textContent = what;
}

async function decodeCurrent() {
  if (state.inFlight) { state.pending = true; return; }  // one request at a time; the latest z wins
  state.inFlight = true;
  const body = {z: state.z.slice()};
  if (state.info.condition) body.label = state.label;  // a conditional run decodes z with the picked class
  try {
    const blob = await (await api("/api/decode", body)).blob();
    state.decodes += 1;
    setCurrent(URL.createObjectURL(blob), body,
      "decoded from the sliders" + (body.label !== undefined ? ` as ${state.info.condition.name} ${body.label}` : ""));
  } catch (e) {
    status(e.message, true);
  } finally {
    state.inFlight = false;
    if (state.pending) { state.pending = false; decodeCurrent(); }
  }
}

async function playInterpolation() {
  const steps = Number($("steps").value);
  const body = {a: state.selected, b: state.endB, steps};
  status("interpolating…");
  try {
    const blob = await (await api("/api/interpolate", body)).blob();
    setCurrent(URL.createObjectURL(blob), body, `${steps} steps from A to B`);
    status("");
  } catch (e) { status(e.message, true); }
}

async function keep() {
  status("keeping…");
  try {
    const kept = await (await api("/api/keep", state.current)).json();
    status(`kept in run ${kept.run_id}: ${kept.artifacts[0]}`);
  } catch (e) { status(e.message, true); }
}

// -- sliders ------------------------------------------------------------------------
function dot(a, b) { return a.reduce((s, v, i) => s + v * b[i], 0); }

function buildSliders() {
  const box = $("sliders");
  box.replaceChildren();
  const info = state.info, z = state.z;
  let specs;
  if (state.mode === "pcs") {
    const {mean, directions, std} = info.pcs;
    const coeffs = directions.map((d) => dot(z.map((v, i) => v - mean[i]), d));
    // What the directions shown do not reach stays as it is while the sliders move.
    state.residual = z.map((v, i) => v - mean[i] - directions.reduce((s, d, k) => s + coeffs[k] * d[i], 0));
    specs = directions.map((d, k) => {
      const reach = Math.max(4 * (std[k] || 1), Math.abs(coeffs[k]) * 1.2);
      return {label: `PC${k + 1}`, lo: -reach, hi: reach, value: coeffs[k]};
    });
  } else {
    specs = z.slice(0, MAX_DIM_SLIDERS).map((v, i) => ({
      label: `z${i}`, lo: Math.min(info.dims.low[i], v), hi: Math.max(info.dims.high[i], v), value: v}));
  }
  specs.forEach((s, k) => {
    const row = document.createElement("label");
    row.className = "slider";
    const name = document.createElement("span");
    name.textContent = s.label;
    const input = document.createElement("input");
    Object.assign(input, {type: "range", min: s.lo, max: s.hi, step: (s.hi - s.lo) / 200, value: s.value});
    input.dataset.k = k;
    const shown = document.createElement("output");
    shown.textContent = s.value.toFixed(2);
    input.addEventListener("input", () => { shown.textContent = Number(input.value).toFixed(2); onSlider(); });
    row.append(name, input, shown);
    box.append(row);
  });
}

function onSlider() {
  const values = [...$("sliders").querySelectorAll("input")].map((i) => Number(i.value));
  if (state.mode === "pcs") {
    const {mean, directions} = state.info.pcs;
    state.z = mean.map((m, i) => m + state.residual[i] + directions.reduce((s, d, k) => s + values[k] * d[i], 0));
  } else {
    values.forEach((v, i) => { state.z[i] = v; });
  }
  decodeCurrent();
}

// -- start --------------------------------------------------------------------------
async function start() {
  try {
    state.info = await (await api("/api/info")).json();
    state.points = await (await api("/api/points")).json();
  } catch (e) { status(e.message, true); return; }
  const info = state.info;
  for (const p of state.points.points) state.byIndex.set(p.index, p);
  $("run").textContent = `run ${info.run_id} · ${info.points} of ${info.test_clips} test clips · `
    + `latent_dim ${info.latent_dim} · vocoder ${info.vocoder}`;
  const select = $("colour-by");
  for (const kind of state.points.label_kinds) select.append(new Option(kind, kind));
  select.value = state.points.label_kind;
  select.addEventListener("change", () => colourMap(select.value));
  state.colourKind = state.points.label_kind;
  drawMap();
  state.z = info.pcs.mean.slice();
  buildSliders();
  if (info.condition) {  // the label picker: which class the sliders' z is decoded with
    const picker = $("label");
    for (const cls of info.condition.classes) picker.append(new Option(cls, cls));
    state.label = info.condition.classes[0];
    $("label-name").textContent = info.condition.name;
    $("label-picker").hidden = false;
    picker.addEventListener("change", () => { state.label = picker.value; decodeCurrent(); });
  }

  const svg = $("map");
  svg.addEventListener("mousemove", showTooltip);
  svg.addEventListener("mouseleave", () => { $("tooltip").hidden = true; });
  svg.addEventListener("click", (event) => {
    if (!event.target.classList.contains("pt")) return;
    const index = Number(event.target.dataset.index);
    if (event.shiftKey) setEndB(index); else selectClip(index);
  });
  for (const radio of document.querySelectorAll("input[name=mode]")) {
    radio.addEventListener("change", () => { state.mode = radio.value; buildSliders(); });
  }
  $("reset").addEventListener("click", () => { if (state.selected !== null) selectClip(state.selected); });
  $("play-interp").addEventListener("click", playInterpolation);
  $("keep").addEventListener("click", keep);
  document.body.dataset.ready = "true";
}

start();
