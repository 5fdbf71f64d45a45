// lungaudit serve: upload a radiograph, show the audited prediction. No framework, no network beyond
// this server. Every string that comes from the server or the file name is set with textContent.
"use strict";

const REASONS = {
  out_of_lung_energy: "Most of the heatmap's energy lies outside the lungs.",
  flip_under_masking: "The prediction changes when everything outside the lungs is masked.",
  flip_without_markers: "The prediction changes when the detected text markers are painted over.",
  no_evidence: "The heatmap holds no evidence for the predicted class.",
};
const VERDICTS = {
  "in-lung": ["In the lungs", "Most of the evidence lies inside the lungs."],
  "out-of-lung": ["Outside the lungs", "Most of the evidence lies outside the lungs"],
  "no evidence": ["No evidence", "The heatmap is empty: the model points nowhere in particular."],
};

const $ = (id) => document.getElementById(id);
let last = null;  // the last answer, for the JSON download
let modelInfo = null;

function pct(v) {
  return v === null || v === undefined ? "n/a" : `${(100 * v).toFixed(1)}%`;
}

function setText(id, text) {
  $(id).textContent = text;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

async function loadModel() {
  try {
    const r = await fetch("/model");
    modelInfo = await r.json();
    const sha = modelInfo.checkpoints.cls.sha256.slice(0, 12);
    setText("model", `run ${modelInfo.run} · ${modelInfo.class_names.length} classes · ${modelInfo.image_size} px · ` +
      `classifier ${sha} · ${modelInfo.device}`);
  } catch (e) {
    setText("model", "the model information could not be loaded");
  }
}

async function upload(file) {
  $("error").hidden = true;
  setText("status", `analysing ${file.name}…`);
  document.body.classList.add("busy");
  const form = new FormData();
  form.append("file", file, file.name);
  try {
    const r = await fetch("/predict", { method: "POST", body: form });
    const body = await r.json().catch(() => ({ error: `the server answered ${r.status} without a message` }));
    if (!r.ok) {
      setText("status", "");
      showError(body.error || `the server answered ${r.status}`);
      return;
    }
    last = body;
    render(body);
    setText("status", `done in ${Math.round(body.timing_ms.total)} ms`);
  } catch (e) {
    setText("status", "");
    showError(`the upload failed: ${e.message}`);
  } finally {
    document.body.classList.remove("busy");
  }
}

function renderVerdict(p) {
  const [title, text] = VERDICTS[p.verdict] || [p.verdict, ""];
  const v = $("verdict");
  v.textContent = "";
  const strong = document.createElement("strong");
  strong.textContent = title;
  v.append(strong, document.createElement("br"));
  v.append(p.verdict === "out-of-lung" && p.region ? `${text}, mostly ${regionText(p.region)}.` : text);
  v.dataset.verdict = p.verdict;
  $("verdict-card").dataset.verdict = p.verdict;
  setText("e-in", pct(p.e_in));
  setText("e-in-tol", pct(p.e_in_tol));
  setText("region", p.region ? regionText(p.region) : "none");
  setText("marker", p.marker_overlap ? "yes" : "no");
  const flag = $("flag");
  flag.textContent = p.flagged ? "Flagged for review" : "Not flagged";
  flag.dataset.flagged = String(p.flagged);
  const list = $("reasons");
  list.textContent = "";
  for (const r of p.reasons) {
    const li = document.createElement("li");
    li.textContent = REASONS[r] || r;
    list.append(li);
  }
}

function regionText(region) {
  return {
    border: "in the border or a corner (where text markers sit)",
    above: "above the lungs (shoulders, neck)",
    below: "below the lungs (abdomen)",
    lateral: "beside the lungs (arms, soft tissue)",
    mediastinum: "between the lungs (mediastinum)",
  }[region] || region;
}

function renderPrediction(p) {
  setText("pred", p.pred);
  setText("prob", pct(p.prob_pred));
  const body = $("probs").tBodies[0];
  body.textContent = "";
  const entries = Object.entries(p.probs).sort((a, b) => b[1] - a[1]);
  for (const [name, value] of entries) {
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    th.textContent = name;
    const bar = document.createElement("td");
    bar.className = "bar";
    const fill = document.createElement("meter");
    fill.min = 0; fill.max = 1; fill.value = value;
    fill.title = pct(value);
    bar.append(fill);
    const num = document.createElement("td");
    num.textContent = pct(value);
    num.className = "num";
    tr.append(th, bar, num);
    if (name === p.pred) tr.className = "top";
    body.append(tr);
  }
  setText("pred-masked", `${p.pred_masked} (${pct(p.prob_masked)} for ${p.pred})${p.flip ? " — changed" : ""}`);
  setText("pred-clean", `${p.pred_without_markers}${p.marker_flip ? " — changed" : ""}`);
  setText("mask-source", p.mask_source === "predicted" ? "predicted by the run's U-Net" : p.mask_source);
  setText("file-name", p.file);
}

function renderPictures(pictures) {
  const box = $("pictures");
  box.textContent = "";
  for (const pic of pictures) {
    const fig = document.createElement("figure");
    fig.dataset.name = pic.name;
    const img = document.createElement("img");
    img.src = pic.src;  // a data: URL produced by the server
    img.alt = pic.label;
    img.width = 320;
    img.height = 320;
    const cap = document.createElement("figcaption");
    cap.textContent = pic.label;
    fig.append(img, cap);
    box.append(fig);
  }
}

function render(body) {
  renderVerdict(body.prediction);
  renderPrediction(body.prediction);
  renderPictures(body.pictures);
  $("result").hidden = false;
}

function download() {
  if (!last) return;
  const record = { prediction: last.prediction, model: modelInfo, lungaudit_version: modelInfo && modelInfo.lungaudit_version };
  const blob = new Blob([JSON.stringify(record, null, 2)], { type: "application/json" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  const stem = (last.prediction.file || "upload").replace(/\.[^.]*$/, "").replace(/[^A-Za-z0-9_-]+/g, "_").slice(0, 60);
  a.download = `${stem || "upload"}.lungaudit.json`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

function wire() {
  const drop = $("drop");
  const input = $("file");
  input.addEventListener("change", () => { if (input.files.length) upload(input.files[0]); input.value = ""; });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) upload(e.dataTransfer.files[0]);
  });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
  $("download").addEventListener("click", download);
  loadModel();
}

document.addEventListener("DOMContentLoaded", wire);
