// fngate web console: a single page over the management API of the same origin.
// The API key lives in this tab's sessionStorage only and travels as a bearer header,
// never in a URL. Every value from the API is put in the page as text, never parsed as markup.
"use strict";

const KEY_STORE = "fngate.console.key";
const OWNER_STORE = "fngate.console.keyOwner";
const ISSUER = "nvidia-cloud-functions-ncp-service-id-aketm";
const POLL_MS = 2000;
const SCOPES = [
  "invoke_function", "list_functions", "list_functions_details", "register_function", "update_function",
  "delete_function", "deploy_function", "queue_details", "update_secrets", "authorize_clients",
  "account_setup", "list_cluster_groups", "manage_keys",
];
const COLORS = ["#2a6df4", "#e8590c", "#1e8e3e", "#9c36b5", "#c0262d", "#0b7285", "#5c940d"];

let timers = [];
let metricsCache = null;

// -- small helpers -----------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function table(headers, rows, attrs) {
  return h("table", attrs || {}, h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))),
    h("tbody", {}, rows.map((r) => h("tr", r.attrs || {}, r.cells.map((c) => h("td", {}, c))))));
}

function badge(status) {
  return h("span", { class: `badge ${status || ""}`, "data-status": status || "" }, status || "-");
}

function age(iso) {
  const t = Date.parse(iso);
  if (!iso || Number.isNaN(t)) return "-";
  let s = Math.max(0, Math.round((Date.now() - t) / 1000));
  if (s < 120) return `${s}s`;
  s = Math.round(s / 60);
  return s < 120 ? `${s}m` : `${Math.round(s / 60)}h`;
}

function fmt(v, digits) {
  if (v === null || v === undefined) return "-";
  return Number(v).toFixed(digits === undefined ? 2 : digits);
}

function showError(err) {
  const box = document.getElementById("error");
  if (!err) { box.hidden = true; box.textContent = ""; return; }
  box.textContent = err.status ? `${err.status} ${err.title || ""}: ${err.detail}` : String(err.message || err);
  box.hidden = false;
}

class ApiError extends Error {
  constructor(status, title, detail) { super(detail); this.status = status; this.title = title; this.detail = detail; }
}

// Every management call: bearer key, JSON both ways, problem+json errors raised as ApiError.
async function api(method, path, body, headers) {
  const key = sessionStorage.getItem(KEY_STORE);
  const init = { method, headers: { Authorization: `Bearer ${key}`, ...(headers || {}) }, cache: "no-store" };
  if (body !== undefined) { init.headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
  const resp = await fetch(path, init);
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = text; }
  if (!resp.ok) {
    const p = data && typeof data === "object" ? data : {};
    throw new ApiError(resp.status, p.title || resp.statusText, p.detail || text || resp.statusText);
  }
  return data;
}

function keyHeaders() {
  return { "Key-Owner-Id": sessionStorage.getItem(OWNER_STORE) || "console@fngate", "Key-Issuer-Id": ISSUER };
}

function every(ms, fn) {
  fn();
  timers.push(setInterval(fn, ms));
}

// -- charts ----------------------------------------------------------------------------

function drawChart(canvas, series, unit) {
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 320, hgt = canvas.clientHeight || 150;
  canvas.width = w * ratio; canvas.height = hgt * ratio;
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  g.clearRect(0, 0, w, hgt);
  const pts = series.flatMap((s) => s.points);
  const left = 44, bottom = hgt - 16, top = 6, right = w - 6;
  g.strokeStyle = "#d8dde6"; g.fillStyle = "#667085"; g.font = "10px sans-serif";
  g.beginPath(); g.moveTo(left, top); g.lineTo(left, bottom); g.lineTo(right, bottom); g.stroke();
  if (!pts.length) { g.fillText("waiting for data", left + 8, top + 16); return; }
  const t0 = Math.min(...pts.map((p) => p[0])), t1 = Math.max(...pts.map((p) => p[0]));
  const vmax = Math.max(...pts.map((p) => p[1]), 1e-9) * 1.1;
  g.fillText(`${fmt(vmax, vmax < 10 ? 3 : 0)}${unit || ""}`, 2, top + 8);
  g.fillText("0", 30, bottom);
  g.fillText(`${Math.round(t1 - t0)}s`, right - 24, hgt - 3);
  const x = (t) => left + (t1 > t0 ? ((t - t0) / (t1 - t0)) * (right - left) : (right - left) / 2);
  const y = (v) => bottom - (v / vmax) * (bottom - top);
  series.forEach((s, i) => {
    g.strokeStyle = s.color || COLORS[i % COLORS.length]; g.lineWidth = 1.6; g.beginPath();
    s.points.forEach((p, j) => (j ? g.lineTo(x(p[0]), y(p[1])) : g.moveTo(x(p[0]), y(p[1]))));
    if (s.points.length === 1) g.arc(x(s.points[0][0]), y(s.points[0][1]), 2, 0, 7);
    g.stroke();
  });
}

function chartBox(id, title) {
  return h("div", { class: "chart", id: `chart-${id}` }, h("h3", {}, title), h("canvas", { "data-chart": id }),
    h("div", { class: "legend", "data-legend": id }));
}

function renderCharts(points) {
  const pick = (f) => points.filter((p) => p[f] !== null && p[f] !== undefined).map((p) => [p.t, p[f]]);
  const last = points[points.length - 1] || {};
  const statuses = [...new Set(points.flatMap((p) => Object.keys(p.errors || {})))].sort();
  const charts = {
    rps: { series: [{ label: "requests/s", points: pick("rps") }], unit: "/s" },
    latency: {
      series: [{ label: "p50", points: pick("p50").map(([t, v]) => [t, v * 1000]) },
        { label: "p99", points: pick("p99").map(([t, v]) => [t, v * 1000]) }],
      unit: "ms", note: last.latencyScope === "gateway" ? " (gateway-wide)" : "",
    },
    errors: {
      series: statuses.map((s) => ({ label: s, points: points.map((p) => [p.t, (p.errors || {})[s] || 0]) })),
      unit: "/s", empty: "no errors",
    },
    inflight: { series: [{ label: "in flight", points: pick("inFlight") }], note: last.inFlightScope === "gateway" ? " (gateway-wide)" : "" },
    queue: { series: [{ label: "queued", points: pick("queueDepth") }] },
    ready: { series: [{ label: "ready instances", points: pick("readyInstances") }] },
  };
  for (const [id, c] of Object.entries(charts)) {
    const canvas = document.querySelector(`canvas[data-chart="${id}"]`);
    const legend = document.querySelector(`[data-legend="${id}"]`);
    if (!canvas) continue;
    drawChart(canvas, c.series, c.unit);
    const text = c.series.map((s, i) => {
      const v = s.points.length ? s.points[s.points.length - 1][1] : null;
      return `${s.label}: ${fmt(v, id === "ready" || id === "queue" || id === "inflight" ? 0 : 2)}`;
    }).join("   ");
    legend.textContent = (text || c.empty || "") + (c.note || "");
    legend.setAttribute("data-points", String(c.series.reduce((n, s) => n + s.points.length, 0)));
  }
}

async function loadMetrics() {
  metricsCache = await api("GET", "/v1/console/metrics");
  return metricsCache;
}

// -- views ----------------------------------------------------------------------------

async function listFunctions() {
  return (await api("GET", "/v2/nvcf/functions")).functions || [];
}

function readyCount(fn) {
  return (fn.activeInstances || []).filter((i) => i.instanceStatus === "ACTIVE").length;
}

async function viewFunctions(view) {
  view.append(h("h1", {}, "Functions"), h("div", { id: "functions" }, h("p", { class: "muted" }, "loading...")));
  every(POLL_MS, async () => {
    let fns;
    try { fns = await listFunctions(); } catch (e) { showError(e); document.getElementById("functions").replaceChildren(h("p", { class: "muted" }, "(not available to this key)")); return; }
    let rates = {};
    try { const m = await loadMetrics(); rates = m.functions || {}; } catch (_) { /* the list still shows */ }
    fns.sort((a, b) => a.name.localeCompare(b.name) || a.versionId.localeCompare(b.versionId));
    const rows = fns.map((fn) => {
      const pts = (rates[fn.id] || {}).points || [];
      const last = pts[pts.length - 1];
      return {
        attrs: { "data-function": fn.name, "data-function-id": fn.id },
        cells: [
          h("a", { href: `#/function/${fn.id}/${fn.versionId}`, class: "fn-link" }, fn.name),
          h("span", { class: "mono" }, fn.id), h("span", { class: "mono" }, fn.versionId),
          badge(fn.status), h("span", { class: "instances" }, `${readyCount(fn)} / ${(fn.activeInstances || []).length}`),
          last ? `${fmt(last.rps)}/s` : "-",
          fn.healthInfo ? h("pre", {}, JSON.stringify(fn.healthInfo, null, 1)) : "",
        ],
      };
    });
    document.getElementById("functions").replaceChildren(
      rows.length ? table(["Name", "Function id", "Version", "Status", "Ready / instances", "Requests", "healthInfo"], rows, { id: "function-table" })
        : h("p", { class: "muted" }, "No functions yet."));
  });
}

async function capacityOptions() {
  try {
    const groups = (await api("GET", "/v2/nvcf/clusterGroups")).clusterGroups || [];
    return groups.flatMap((g) => g.gpus.flatMap((gpu) => gpu.instanceTypes.map((t) => ({ backend: g.id, gpu: gpu.name, instanceType: t.name, free: t.free, total: t.total }))));
  } catch (e) { showError(e); return []; }
}

function deployForm(fid, vid, options, after) {
  const sel = h("select", { id: "deploy-type" }, options.map((o, i) => h("option", { value: String(i) }, `${o.gpu} / ${o.instanceType} (${o.backend}, ${o.free ?? "?"} free)`)));
  const min = h("input", { id: "deploy-min", type: "number", min: "0", value: "1" });
  const max = h("input", { id: "deploy-max", type: "number", min: "1", value: "2" });
  const conc = h("input", { id: "deploy-concurrency", type: "number", min: "1", value: "4" });
  const form = h("form", { class: "inline", id: "deploy-form" },
    h("label", {}, "GPU / instance type", sel), h("label", {}, "minInstances", min), h("label", {}, "maxInstances", max),
    h("label", {}, "maxRequestConcurrency", conc), h("button", { type: "submit", id: "deploy-submit" }, "Deploy"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const o = options[Number(sel.value)];
    if (!o) { showError(new Error("no instance type to deploy on")); return; }
    const spec = { gpu: o.gpu, instanceType: o.instanceType, backend: o.backend, minInstances: Number(min.value), maxInstances: Number(max.value), maxRequestConcurrency: Number(conc.value) };
    try { await api("POST", `/v2/nvcf/deployments/functions/${fid}/versions/${vid}`, { deploymentSpecifications: [spec] }); showError(null); after(); } catch (e) { showError(e); }
  });
  return form;
}

function scaleRow(dep, spec, after) {
  const min = h("input", { type: "number", min: "0", value: String(spec.minInstances), "data-scale-min": spec.gpuSpecificationId });
  const max = h("input", { type: "number", min: "1", value: String(spec.maxInstances), "data-scale-max": spec.gpuSpecificationId });
  const button = h("button", { type: "button", class: "scale-submit", onclick: async () => {
    try {
      await api("PATCH", `/v2/nvcf/deployments/${dep.deploymentId}/gpu-specifications/${spec.gpuSpecificationId}`, { minInstances: Number(min.value), maxInstances: Number(max.value) });
      showError(null); after();
    } catch (e) { showError(e); }
  } }, "Scale");
  return { cells: [spec.gpu, spec.instanceType, spec.backend || "-", `${spec.minInstances} .. ${spec.maxInstances}`, spec.maxRequestConcurrency ?? "-", h("span", { class: "row" }, min, max, button)] };
}

function instancesTable(instances) {
  if (!instances.length) return h("p", { class: "muted", id: "instances-none" }, "No instances.");
  return table(["Instance", "State", "GPU", "Instance type", "Backend", "Age"], instances.map((i) => ({
    attrs: { "data-instance": i.instanceId, "data-instance-status": i.instanceStatus },
    cells: [h("span", { class: "mono" }, i.instanceId), badge(i.instanceStatus), i.gpu || "-", i.instanceType || "-", i.backend || "-", age(i.instanceCreatedAt)],
  })), { id: "instance-table" });
}

function defaultBody(fn) {
  if ((fn.containerImage || "").includes("sse") || (fn.inferenceUrl || "").includes("chat")) {
    return JSON.stringify({ messages: [{ role: "user", content: "hello" }], stream: true, tokens: 8, interval: 0.05 });
  }
  return "hello";
}

function invokePanel(fn) {
  const path = h("input", { id: "invoke-path", value: fn.inferenceUrl || "/", size: "30" });
  const body = h("textarea", { id: "invoke-body", rows: "3", cols: "70" }, defaultBody(fn));
  const sse = h("input", { id: "invoke-sse", type: "checkbox", checked: defaultBody(fn).includes('"stream"') });
  const out = h("div", { id: "invoke-out" });
  const go = async (ev) => {
    ev.preventDefault();
    const headers = { Authorization: `Bearer ${sessionStorage.getItem(KEY_STORE)}`, "Content-Type": body.value.trim().startsWith("{") ? "application/json" : "text/plain" };
    if (sse.checked) headers.Accept = "text/event-stream";
    const q = new URLSearchParams({ path: path.value, version: fn.versionId });
    out.replaceChildren(h("p", { class: "muted" }, "invoking..."));
    let resp;
    try { resp = await fetch(`/v1/console/invoke/${fn.id}?${q}`, { method: "POST", headers, body: body.value, cache: "no-store" }); } catch (e) { showError(e); return; }
    const heads = ["nvcf-reqid", "nvcf-status", "content-type"].map((n) => ({ cells: [n, h("span", { class: "mono", id: `invoke-h-${n}` }, resp.headers.get(n) || "-")] }));
    const events = h("ol", { id: "invoke-events" });
    const tokens = h("div", { id: "invoke-tokens" });
    const raw = h("pre", { id: "invoke-body-out" });
    out.replaceChildren(h("p", {}, "HTTP ", h("strong", { id: "invoke-status" }, String(resp.status)), " ", resp.statusText), table(["Header", "Value"], heads, { id: "invoke-headers" }));
    const streaming = (resp.headers.get("content-type") || "").includes("text/event-stream");
    if (streaming) out.append(h("h3", {}, "Tokens"), tokens, h("h3", {}, "Events"), events); else out.append(raw);
    const reader = resp.body.getReader();
    const dec = new TextDecoder();
    let buf = "", whole = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const chunk = dec.decode(value, { stream: true });
      whole += chunk;
      if (!streaming) { raw.textContent = whole; continue; }
      buf += chunk;
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const ev = buf.slice(0, cut); buf = buf.slice(cut + 2);
        const data = ev.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
        events.append(h("li", { class: "sse-event" }, data));
        try { const c = JSON.parse(data).choices[0]; tokens.textContent += (c.delta || {}).content || (c.message || {}).content || ""; } catch (_) { /* [DONE] or not JSON */ }
      }
    }
    out.setAttribute("data-done", "1");
    if (!resp.ok) {
      try { const p = JSON.parse(whole); showError(new ApiError(resp.status, p.title, p.detail || whole)); } catch (_) { showError(new ApiError(resp.status, resp.statusText, whole)); }
    } else showError(null);
  };
  return h("div", {}, h("form", { class: "inline", id: "invoke-form", onsubmit: go },
    h("label", {}, "path", path), h("label", {}, "body", body), h("label", { class: "check" }, sse, "SSE"),
    h("button", { type: "submit", id: "invoke-submit" }, "Invoke")), out);
}

async function viewFunction(view, fid, vid) {
  const head = h("div", { id: "fn-head" }), dep = h("div", { id: "fn-deployment" }), inst = h("div", { id: "fn-instances" });
  const secrets = h("div", { id: "fn-secrets" }), invoke = h("div", { id: "fn-invoke" });
  const charts = h("div", { class: "charts" }, chartBox("rps", "Request rate"), chartBox("latency", "Latency p50 / p99"),
    chartBox("errors", "Errors by status"), chartBox("inflight", "In flight"), chartBox("queue", "Queue depth"), chartBox("ready", "Ready instances"));
  view.append(h("p", {}, h("a", { href: "#/functions" }, "< functions")), head, h("h2", {}, "Live"), charts,
    h("h2", {}, "Deployment"), dep, h("h2", {}, "Instances"), inst, h("h2", {}, "Secrets (names only)"), secrets, h("h2", {}, "Invoke once"), invoke);
  let options = null, invokeShown = false, depState = "";
  const refresh = async () => {
    let fn;
    try { fn = (await api("GET", `/v2/nvcf/functions/${fid}/versions/${vid}`)).function; } catch (e) { showError(e); return; }
    head.replaceChildren(h("h1", {}, fn.name, " ", badge(fn.status)), table(["Field", "Value"], [
      { cells: ["function id", h("span", { class: "mono" }, fn.id)] }, { cells: ["version id", h("span", { class: "mono" }, fn.versionId)] },
      { cells: ["image", fn.containerImage || fn.helmChart || "-"] }, { cells: ["inference URL", `${fn.inferenceUrl || "-"} (port ${fn.inferencePort ?? "-"})`] },
      { cells: ["healthInfo", fn.healthInfo ? h("pre", { id: "health-info" }, JSON.stringify(fn.healthInfo, null, 1)) : "-"] },
    ]));
    inst.replaceChildren(instancesTable(fn.activeInstances || []));
    secrets.replaceChildren(fn.secrets && fn.secrets.length ? h("ul", { id: "secret-names" }, fn.secrets.map((s) => h("li", {}, typeof s === "string" ? s : s.name)))
      : h("p", { class: "muted" }, "none (or not visible to this key)"));
    if (!invokeShown) { invoke.replaceChildren(invokePanel(fn)); invokeShown = true; }
    let d = null;
    if (fn.status !== "INACTIVE") {
      try { d = (await api("GET", `/v2/nvcf/deployments/functions/${fid}/versions/${vid}`)).deployment; } catch (e) { if (e.status !== 404) showError(e); }
    }
    const key = d ? JSON.stringify(d.deploymentSpecifications) + fn.status : `none${fn.status}`;
    if (key === depState) return;  // leave the inputs alone while nothing changed
    depState = key;
    if (d) {
      const graceful = h("input", { id: "undeploy-graceful", type: "checkbox", checked: true });
      dep.replaceChildren(table(["GPU", "Instance type", "Backend", "min .. max", "Concurrency", "Scale to min / max"],
        d.deploymentSpecifications.map((s) => scaleRow(d, s, refresh)), { id: "deployment-table" }),
      h("div", { class: "row" }, h("label", { class: "check" }, graceful, "graceful (drain first)"),
        h("button", { type: "button", class: "danger", id: "undeploy", onclick: async () => {
          try { await api("DELETE", `/v2/nvcf/deployments/functions/${fid}/versions/${vid}?graceful=${graceful.checked}`); showError(null); refresh(); } catch (e) { showError(e); }
        } }, "Undeploy")));
    } else {
      options = options || await capacityOptions();
      dep.replaceChildren(h("p", { class: "muted" }, "Not deployed."), deployForm(fid, vid, options, refresh));
    }
  };
  every(POLL_MS, async () => {
    await refresh();
    try { const m = await loadMetrics(); renderCharts(((m.functions || {})[fid] || {}).points || []); } catch (e) { showError(e); }
  });
}

async function viewDeployments(view) {
  view.append(h("h1", {}, "Deployments"), h("div", { id: "deployments" }));
  every(POLL_MS * 2, async () => {
    let fns;
    try { fns = (await listFunctions()).filter((f) => f.status !== "INACTIVE"); } catch (e) { showError(e); return; }
    const rows = [];
    for (const fn of fns) {
      let d;
      try { d = (await api("GET", `/v2/nvcf/deployments/functions/${fn.id}/versions/${fn.versionId}`)).deployment; } catch (e) { if (e.status !== 404) showError(e); continue; }
      for (const s of d.deploymentSpecifications) {
        const insts = (fn.activeInstances || []).filter((i) => !i.gpuSpecificationId || i.gpuSpecificationId === s.gpuSpecificationId);
        rows.push({ attrs: { "data-deployment": fn.name }, cells: [h("a", { href: `#/function/${fn.id}/${fn.versionId}` }, fn.name), badge(fn.status), s.gpu, s.instanceType,
          s.backend || "-", `${s.minInstances} .. ${s.maxInstances}`,
          insts.length ? h("ul", {}, insts.map((i) => h("li", {}, badge(i.instanceStatus), " ", h("span", { class: "mono" }, i.instanceId.slice(0, 8)), ` ${age(i.instanceCreatedAt)}`))) : "none"] });
      }
    }
    document.getElementById("deployments").replaceChildren(rows.length ? table(["Function", "Status", "GPU", "Instance type", "Backend", "min .. max", "Instances (state, age)"], rows)
      : h("p", { class: "muted" }, "Nothing deployed."));
  });
}

async function viewQueues(view) {
  view.append(h("h1", {}, "Queues"), h("div", { id: "queues" }));
  every(POLL_MS, async () => {
    let fns;
    try { fns = (await listFunctions()).filter((f) => f.status !== "INACTIVE"); } catch (e) { showError(e); return; }
    const rows = [];
    for (const id of [...new Set(fns.map((f) => f.id))]) {
      try {
        const q = await api("GET", `/v2/nvcf/queues/functions/${id}`);
        for (const v of q.queues) rows.push({ attrs: { "data-queue": v.functionName }, cells: [v.functionName, h("span", { class: "mono" }, v.functionVersionId), badge(v.functionStatus), String(v.queueDepth)] });
      } catch (e) { if (e.status !== 404) { showError(e); return; } }
    }
    document.getElementById("queues").replaceChildren(table(["Function", "Version", "Status", "Queue depth"], rows, { id: "queue-table" }));
  });
}

function keyCreateForm(after) {
  const desc = h("input", { id: "key-description", value: "console key", size: "24" });
  const days = h("input", { id: "key-days", type: "number", min: "1", max: "365", value: "30" });
  const fn = h("input", { id: "key-function", placeholder: "all functions, or FID or FID/VID", size: "40" });
  const boxes = SCOPES.map((s) => h("label", { class: "check" }, h("input", { type: "checkbox", value: s, "data-scope": s, checked: s === "invoke_function" || s === "list_functions" }), s));
  const made = h("div", { id: "key-created" });
  const form = h("form", { id: "key-form" }, h("div", { class: "row" }, h("label", {}, "description", desc), h("label", {}, "expires in days", days), h("label", {}, "function", fn)),
    h("div", { class: "scopes" }, boxes), h("button", { type: "submit", id: "key-submit" }, "Create key"), made);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const scopes = boxes.map((b) => b.querySelector("input")).filter((i) => i.checked).map((i) => i.value);
    const target = fn.value.trim();
    const resources = target ? [{ type: "function", id: target.includes("/") ? target : `${target}/*` }]
      : [{ id: "*", type: "account-functions" }, { id: "*", type: "authorized-functions" }];
    const expires = new Date(Date.now() + Number(days.value) * 86400000).toISOString();
    try {
      const key = await api("POST", "/v1/keys", { description: desc.value, expires_at: expires,
        authorizations: { policies: [{ aud: ISSUER, product: "nv-cloud-functions", resources, scopes }] } }, keyHeaders());
      made.replaceChildren(h("div", { class: "newkey" }, "New key (shown once, copy it now): ", h("code", { id: "new-key-value" }, key.value)));
      showError(null); after();
    } catch (e) { showError(e); }
  });
  return form;
}

async function viewKeys(view) {
  const owner = h("input", { id: "key-owner", value: sessionStorage.getItem(OWNER_STORE) || "console@fngate", size: "30" });
  const list = h("div", { id: "keys" });
  const load = async () => {
    sessionStorage.setItem(OWNER_STORE, owner.value.trim() || "console@fngate");
    let keys;
    try { keys = (await api("GET", "/v1/keys", undefined, keyHeaders())).keys || []; } catch (e) { showError(e); list.replaceChildren(h("p", { class: "muted" }, "(not available to this key)")); return; }
    list.replaceChildren(keys.length ? table(["Key", "Description", "Status", "Expires", "Id", ""], keys.map((k) => ({
      attrs: { "data-key-id": k.id },
      cells: [h("code", { class: "masked" }, k.value), k.description || "", badge(k.status), k.expires_at || "-", h("span", { class: "mono" }, k.id),
        h("button", { type: "button", class: "danger revoke", onclick: async () => {
          try { await api("DELETE", `/v1/keys/${k.id}`, undefined, keyHeaders()); showError(null); load(); } catch (e) { showError(e); }
        } }, "Revoke")],
    })), { id: "key-table" }) : h("p", { class: "muted" }, "No keys for this owner."));
  };
  view.append(h("h1", {}, "API keys"), h("div", { class: "row" }, h("label", {}, "Key-Owner-Id", owner), h("button", { type: "button", class: "secondary", onclick: load }, "Show")),
    list, h("h2", {}, "Create a key"), keyCreateForm(load));
  await load();
}

async function viewSecrets(view) {
  view.append(h("h1", {}, "Secrets"), h("p", { class: "muted" }, "Names only: values are never returned by the API."), h("div", { id: "secrets" }));
  let fns;
  try { fns = await listFunctions(); } catch (e) { showError(e); return; }
  const rows = [];
  for (const fn of fns) {
    try {
      const full = (await api("GET", `/v2/nvcf/functions/${fn.id}/versions/${fn.versionId}`)).function;
      rows.push({ cells: [fn.name, h("span", { class: "mono" }, fn.versionId), (full.secrets || []).map((s) => (typeof s === "string" ? s : s.name)).join(", ") || "-"] });
    } catch (e) { showError(e); }
  }
  document.getElementById("secrets").replaceChildren(table(["Function", "Version", "Secret names"], rows, { id: "secret-table" }));
}

async function viewGpus(view) {
  view.append(h("h1", {}, "GPU inventory"), h("div", { id: "gpus" }));
  every(POLL_MS * 2, async () => {
    const rows = (await capacityOptions()).map((o) => ({ cells: [o.backend, o.gpu, o.instanceType, String(o.total ?? "-"), String(o.free ?? "-")] }));
    document.getElementById("gpus").replaceChildren(table(["Backend", "GPU", "Instance type", "Total", "Free"], rows, { id: "gpu-table" }));
  });
}

// -- shell ----------------------------------------------------------------------------

function showLogin(message) {
  document.getElementById("login").hidden = false;
  document.getElementById("nav").hidden = true;
  document.getElementById("logout").hidden = true;
  document.getElementById("who").textContent = "";
  document.getElementById("view").replaceChildren();
  if (message) showError(message);
}

async function route() {
  timers.forEach(clearInterval); timers = [];
  const key = sessionStorage.getItem(KEY_STORE);
  if (!key) { showLogin(); return; }
  document.getElementById("login").hidden = true;
  document.getElementById("nav").hidden = false;
  document.getElementById("logout").hidden = false;
  document.getElementById("who").textContent = `${key.slice(0, 10)}...${key.slice(-3)}`;
  showError(null);
  const parts = (location.hash.replace(/^#\/?/, "") || "functions").split("/");
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("current", a.dataset.view === parts[0]));
  const view = h("section", { "data-view": parts[0] });
  document.getElementById("view").replaceChildren(view);
  const views = { functions: viewFunctions, deployments: viewDeployments, queues: viewQueues, keys: viewKeys, secrets: viewSecrets, gpus: viewGpus };
  try {
    if (parts[0] === "function" && parts[1] && parts[2]) await viewFunction(view, parts[1], parts[2]);
    else await (views[parts[0]] || viewFunctions)(view);
  } catch (e) { showError(e); }
}

document.getElementById("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const input = document.getElementById("login-key");
  const key = input.value.trim();
  input.value = "";
  sessionStorage.setItem(KEY_STORE, key);
  try {
    await api("GET", "/v2/nvcf/functions");
  } catch (e) {
    // a key the API does not know is refused here; a known key without list scope logs in and sees its 403s
    if (e.status === 401 || (e.status === 403 && /Authorization failed/.test(e.detail))) { sessionStorage.removeItem(KEY_STORE); showLogin(e); return; }
  }
  if (!location.hash || location.hash === "#/") location.hash = "#/functions"; else route();
});
document.getElementById("logout").addEventListener("click", () => { sessionStorage.removeItem(KEY_STORE); location.hash = ""; showLogin(); });
window.addEventListener("hashchange", route);
route();
