// Seedbed Studio's one script: forms post JSON, a job page re-fetches its live part, chat reads a stream.
// Plain DOM, no framework and nothing fetched from elsewhere (the machines it runs on are often offline).
"use strict";
const $ = (id) => document.getElementById(id);
async function postJSON(url, body) {
  const r = await fetch(url, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  const data = await r.json().catch(() => ({error: r.statusText}));
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}

// The recipe form: every change shows the validated YAML and command (or the error naming the field).
function formFields(form) {
  const fields = {};
  for (const el of form.querySelectorAll("[data-field]")) {
    const kind = el.dataset.kind, name = el.dataset.field;
    if (kind === "bool") fields[name] = el.checked;
    else if (kind === "list") fields[name] = el.value.split("\n").map((s) => s.trim()).filter(Boolean);
    else if (el.value.trim() !== "") fields[name] = el.value.trim();
  }
  return fields;
}
const recipeForm = $("recipe-form");
if (recipeForm) {
  const verb = recipeForm.dataset.verb;
  const preview = async () => {
    try {
      const r = await postJSON("/api/recipe", {verb, fields: formFields(recipeForm)});
      $("recipe-yaml").textContent = r.yaml; $("recipe-command").textContent = r.command; $("recipe-error").textContent = "";
      $("recipe-estimate").innerHTML = r.estimate;
    } catch (e) { $("recipe-error").textContent = e.message; }
  };
  recipeForm.addEventListener("input", preview);
  preview();
  $("submit-job").addEventListener("click", async () => {
    try { location.href = (await postJSON("/api/jobs", {verb, fields: formFields(recipeForm)})).url; }
    catch (e) { $("recipe-error").textContent = e.message; }
  });
}

// A job's page: its live part is re-rendered by the server every 2 s while it is queued or running.
const live = $("live");
async function refresh() {
  const state = $("job-state");
  if (!state || !["queued", "running"].includes(state.dataset.state)) return;
  const r = await fetch(live.dataset.poll);
  if (r.ok) live.innerHTML = await r.text();
  setTimeout(refresh, 2000);
}
if (live) setTimeout(refresh, 2000);
document.addEventListener("click", async (event) => {
  const cancel = event.target.closest("[data-cancel]");
  if (cancel) { await postJSON(`/api/jobs/${cancel.dataset.cancel}/cancel`, {}); location.reload(); }
});

// Datasets: upload (PUT, streamed by the server under its size limit), prepare as a job.
if ($("upload-button")) $("upload-button").addEventListener("click", async () => {
  const file = $("upload-file").files[0];
  if (!file) return;
  $("upload-status").textContent = "uploading…";
  const r = await fetch(`/api/datasets/${encodeURIComponent(file.name)}`, {method: "PUT", body: file});
  const data = await r.json();
  if (r.ok) location.href = data.url; else $("upload-status").textContent = data.error;
});
if ($("prepare-button")) $("prepare-button").addEventListener("click", async () => {
  const b = $("prepare-button"), mapping = {};
  for (const name of ["prompt", "response", "system"]) { const v = $(`m-${name}`).value.trim(); if (v) mapping[name] = v; }
  const json = $("m-response_json").value.split(",").map((s) => s.trim()).filter(Boolean);
  if (json.length) mapping.response_json = json;
  const fields = {inputs: [b.dataset.path], out: b.dataset.out};
  if (Object.keys(mapping).length) fields.mapping = mapping;
  try { location.href = (await postJSON("/api/jobs", {verb: "prepare", fields})).url; }
  catch (e) { alert(e.message); }
});

// Models: export to GGUF is a quantize job.
if ($("export-gguf")) $("export-gguf").addEventListener("click", async () => {
  const model = $("export-gguf").dataset.model, method = $("gguf-method").value;
  const fields = {model, method, out: `${model}-${method}`};
  try { location.href = (await postJSON("/api/jobs", {verb: "quantize", fields})).url; }
  catch (e) { alert(e.message); }
});

// Models: serving is a serve job beside the queue; the studio gives it a free port and shows its URL.
if ($("serve-model")) $("serve-model").addEventListener("click", async () => {
  const b = $("serve-model");
  try { location.href = (await postJSON("/api/jobs", {verb: "serve", fields: {model: [`${b.dataset.name}=${b.dataset.model}`]}})).url; }
  catch (e) { alert(e.message); }
});

// Playground: chat (the answer streams in), blind A/B and votes.
let history = [];
function bubble(role, text) {
  const p = document.createElement("div");
  p.className = `turn ${role}`;
  p.innerHTML = `<b>${role === "user" ? "you" : "model"}:</b> `;
  const span = document.createElement("span"); span.textContent = text; p.appendChild(span);
  $("chat-log").appendChild(p);
  return span;
}
if ($("chat-send")) {
  $("chat-reset").addEventListener("click", () => { history = []; $("chat-log").innerHTML = ""; });
  $("chat-send").addEventListener("click", async () => {
    const text = $("chat-input").value.trim();
    if (!text) return;
    $("chat-input").value = ""; bubble("user", text); history.push({role: "user", content: text});
    const out = bubble("assistant", "");
    const r = await fetch("/api/chat", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({
      model: $("chat-model").value, messages: history, temperature: parseFloat($("chat-temperature").value) || 0,
      max_tokens: parseInt($("chat-max-tokens").value) || 128, json_mode: $("chat-json").checked,
      tools: $("chat-calculator").checked ? ["calculator"] : []})});
    if (!r.ok) { out.textContent = (await r.json()).error; out.className = "error"; history.pop(); return; }
    const reader = r.body.getReader(), decoder = new TextDecoder();
    for (;;) { const {value, done} = await reader.read(); if (done) break; out.textContent += decoder.decode(value, {stream: true}); }
    out.parentElement.dataset.done = "1";
    history.push({role: "assistant", content: out.textContent});
  });
}
let pair = null;
if ($("ab-ask")) {
  $("ab-ask").addEventListener("click", async () => {
    $("ab-result").textContent = "both models are answering…";
    try {
      pair = await postJSON("/api/ab", {prompt: $("ab-prompt").value, models: [$("ab-model-1").value, $("ab-model-2").value]});
      $("ab-a").textContent = pair.A; $("ab-b").textContent = pair.B;
      $("ab-answers").hidden = false; $("ab-tie").hidden = false; $("ab-result").textContent = "";
    } catch (e) { $("ab-result").textContent = e.message; }
  });
  document.addEventListener("click", async (event) => {
    const b = event.target.closest("[data-vote]");
    if (!b || !pair) return;
    try {
      const r = await postJSON(`/api/ab/${pair.id}/vote`, {winner: b.dataset.vote});
      $("ab-result").textContent = `Thanks: A was ${r.model_a}, B was ${r.model_b}.`;
      $("leaderboard").innerHTML = r.leaderboard; pair = null;
    } catch (e) { $("ab-result").textContent = e.message; }
  });
}

// The models page: picking another quality figure redraws the Pareto plot (the page's form works without this).
const paretoMetric = $("pareto-metric");
if (paretoMetric) paretoMetric.addEventListener("change", () => paretoMetric.form.submit());
