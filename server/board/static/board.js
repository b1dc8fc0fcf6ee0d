// The boxforge board. Every string that came from a box is inserted as text (el() / textContent), never as HTML;
// diff2html draws the diff and escapes what it draws. Actions are POSTs carrying this session's CSRF token.
"use strict";

const $ = (selector) => document.querySelector(selector);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const state = {
  fleet: null, clockOffset: 0, csrf: null, view: "fleet", queue: [], selected: 0, order: [],
  diffFormat: "side-by-side", jobRun: 0, diffServer: null,
};

function now() { return Date.now() / 1000 + state.clockOffset; }

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  seconds = Math.max(0, Math.round(seconds));
  const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
  if (h) return `${h}h${String(m).padStart(2, "0")}m`;
  if (m) return `${m}m${String(s).padStart(2, "0")}s`;
  return `${s}s`;
}

function toast(message, kind) {
  const box = $("#toast");
  box.textContent = message;
  box.className = kind || "";
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.hidden = true; }, 8000);
}

// confirmation: a modal with the action's words; resolves to null (cancelled) or {text, send}
function confirmAction(text, { input = null, send = false, ok = "OK" } = {}) {
  const dialog = $("#confirm");
  $("#confirm-text").textContent = text;
  $("#confirm-ok").textContent = ok;
  const area = $("#confirm-input");
  area.hidden = input === null;
  area.value = "";
  area.placeholder = input || "";
  $("#confirm-send-label").hidden = !send;
  $("#confirm-send").checked = false;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      if (dialog.returnValue !== "ok") resolve(null);
      else resolve({ text: area.value, send: $("#confirm-send").checked });
    }, { once: true });
    dialog.returnValue = "";
    dialog.showModal();
    (input === null ? $("#confirm-ok") : area).focus();
  });
}

async function post(name, body) {
  const response = await fetch(`api/actions/${name}`, {
    method: "POST", credentials: "same-origin",
    headers: { "content-type": "application/json", "x-boxforge-csrf": state.csrf || "" },
    body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(answer.error || `HTTP ${response.status}`);
  return answer;
}

async function act(name, body, question, options) {
  let extra = {};
  if (question) {
    const answer = await confirmAction(question, options);
    if (answer === null) return null;
    extra = answer;
  }
  try {
    const result = await post(name, typeof body === "function" ? body(extra) : body);
    toast(result.message || "done", "ok");
    return result;
  } catch (error) {
    toast(error.message, "error");
    return null;
  }
}

// ---- fleet

function countdown(box) {
  return el("span", { class: "countdown", "data-expires": box.expires_at }, duration(box.expires_at - now()));
}

function jobRow(job) {
  const running = job.state === "running";
  return el("li", { class: `job ${job.state}`, "data-job": job.job_id },
    el("a", { href: `#job/${job.job_id}` }, job.job_id),
    el("span", { class: `badge ${job.state}` }, job.state + (job.exit_code !== null && !running ? ` ${job.exit_code}` : "")),
    el("span", { class: running ? "elapsed" : "took", "data-started": running ? job.started_at : null },
      duration(running ? now() - job.started_at : job.elapsed_s)),
    el("code", { class: "command" }, job.command),
    job.last_line ? el("div", { class: "last-line" }, job.last_line) : null);
}

function boxCard(box) {
  const reach = box.reachable === false ? "unreachable" : box.reachable ? "reachable" : "unknown";
  const cost = box.price_per_hour !== null
    ? el("span", { class: "cost", "data-price": box.price_per_hour, "data-created": box.created_at },
      (box.cost_so_far || 0).toFixed(3)) : null;
  return el("article", { class: `box ${box.state}`, "data-box": box.name },
    el("header", {},
      el("span", { class: `dot ${reach}`, title: reach }),
      el("strong", { class: "name" }, box.name),
      el("span", { class: `badge ${box.state}` }, box.step ? `${box.state}: ${box.step}` : box.state),
      el("span", { class: "provider" }, box.provider),
      countdown(box), cost),
    el("div", { class: "meta" },
      box.branch ? el("span", { class: "branch" }, box.branch) : null,
      box.agent && box.agent !== "none" ? el("span", { class: "agent" }, `agent ${box.agent}`) : null,
      box.plan ? el("a", { class: "plan", href: "#plans" },
        `plan ${box.plan.plan} · task ${box.plan.task} (${box.plan.state}${box.plan.check ? `, check ${box.plan.check}` : ""})`) : null),
    box.warning ? el("div", { class: "warning" }, box.warning) : null,
    el("ul", { class: "jobs" }, box.jobs.map(jobRow)),
    box.jobs_total > box.jobs.length ? el("div", { class: "more" }, `${box.jobs_total - box.jobs.length} older jobs`) : null,
    box.state === "ready" ? el("div", { class: "actions" },
      el("button", { type: "button", onclick: () => extendBox(box.name) }, "Extend…"),
      el("button", { type: "button", onclick: () => act("fetch", { server: box.name },
        `Fetch ${box.name}'s work home into refs/boxforge/${box.name}/…?`, { ok: "Fetch" }) }, "Fetch…"),
      el("button", { type: "button", class: "danger", onclick: () => act("burn", { server: box.name },
        `Burn ${box.name}? Its work is fetched home first, then the box is destroyed.`, { ok: "Burn" }) }, "Burn…"))
      : null);
}

async function extendBox(name) {
  await act("extend", (answer) => ({ server: name, ttl: answer.text.trim() || "1h" }),
    `Extend ${name}: new time to live from now (30m, 2h; empty: 1h)`, { input: "1h", ok: "Extend" });
}

function renderFleet() {
  const fleet = state.fleet;
  if (!fleet) return;
  const started = performance.now();
  $("#boxes").replaceChildren(...fleet.boxes.map(boxCard));
  $("#no-boxes").hidden = fleet.boxes.length > 0;
  const cost = fleet.cost_so_far !== null ? ` · ${fleet.cost_so_far.toFixed(2)} spent` : "";
  $("#totals").textContent = `${fleet.count} box${fleet.count === 1 ? "" : "es"} · ${fleet.running_jobs} running${cost}`;
  if (state.view === "plans") renderPlans();
  void $("#boxes").offsetHeight;  // the layout, so the render time the benchmark reads includes it
  document.body.dataset.version = fleet.version;
  window.boardRenderMs = performance.now() - started;
  if (window.boardFirstRenderMs === undefined) window.boardFirstRenderMs = window.boardRenderMs;
}

function tick() {
  for (const node of document.querySelectorAll(".countdown")) {
    const left = Number(node.dataset.expires) - now();
    node.textContent = left > 0 ? `${duration(left)} left` : "expired";
    node.classList.toggle("soon", left < 600);
  }
  for (const node of document.querySelectorAll(".elapsed")) node.textContent = duration(now() - Number(node.dataset.started));
  for (const node of document.querySelectorAll(".cost")) {
    node.textContent = `${(Number(node.dataset.price) * (now() - Number(node.dataset.created)) / 3600).toFixed(3)}`;
  }
}

function connect() {
  const source = new EventSource("events");
  source.addEventListener("open", () => { $("#live").textContent = "live"; $("#live").className = "live on"; });
  source.addEventListener("error", () => { $("#live").textContent = "reconnecting…"; $("#live").className = "live off"; });
  source.addEventListener("fleet", (event) => {
    state.fleet = JSON.parse(event.data);
    state.clockOffset = state.fleet.server_time - Date.now() / 1000;
    renderFleet();
    tick();
    if (state.view === "review") reviewSoon();
  });
}

// ---- a job's output, followed by offset

async function showJob(jobId) {
  const run = ++state.jobRun;
  $("#job-title").textContent = jobId;
  $("#job-out").textContent = "";
  $("#job-err").textContent = "";
  $("#job-state").textContent = "reading…";
  $("#job-state").className = "badge";
  $("#job-cancel").onclick = () => act("cancel", { job_id: jobId }, `Cancel job ${jobId} (SIGTERM to its process group)?`,
    { ok: "Cancel job" });
  let out = 0, err = 0, wait = 0;
  while (run === state.jobRun) {
    let job;
    try {
      const response = await fetch(`api/jobs/${encodeURIComponent(jobId)}?stdout_offset=${out}&stderr_offset=${err}&wait_s=${wait}`);
      job = await response.json();
      if (!response.ok) throw new Error(job.error || `HTTP ${response.status}`);
    } catch (error) {
      if (run === state.jobRun) $("#job-state").textContent = error.message;
      return;
    }
    if (run !== state.jobRun) return;
    const pre = $("#job-out");
    const following = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.append(job.stdout);
    if (following) pre.scrollTop = pre.scrollHeight;  // follow the end unless the reader scrolled up
    $("#job-err").append(job.stderr);
    $("#job-err").hidden = !$("#job-err").textContent;
    $("#job-state").textContent = job.state + (job.exit_code !== null ? ` (exit ${job.exit_code})` : "");
    $("#job-state").className = `badge ${job.state}`;
    $("#job-cancel").hidden = job.state !== "running";
    out = job.stdout_offset; err = job.stderr_offset;
    if (job.state !== "running" && !job.more) return;
    if (!job.box_reachable) return;
    wait = job.more ? 0 : 10;
  }
}

// ---- review queue

async function loadReview() {
  $("#review-loading").hidden = false;
  try {
    const response = await fetch("api/review");
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error || `HTTP ${response.status}`);
    const known = new Set(answer.rows.map((r) => r.server));
    state.order = state.order.filter((s) => known.has(s));
    for (const row of answer.rows) if (!state.order.includes(row.server)) state.order.push(row.server);
    state.queue = state.order.map((s) => answer.rows.find((r) => r.server === s));
    state.selected = Math.min(state.selected, Math.max(0, state.queue.length - 1));
    renderQueue();
  } catch (error) {
    toast(error.message, "error");
  } finally {
    $("#review-loading").hidden = true;
  }
}

// the queue follows the fleet's changes too, at most every 5 s (each load compares every box over SSH)
function reviewSoon() {
  if (reviewSoon.timer) return;
  const wait = Math.max(0, 5000 - (Date.now() - (reviewSoon.last || 0)));
  reviewSoon.timer = setTimeout(() => {
    reviewSoon.timer = null;
    reviewSoon.last = Date.now();
    if (state.view === "review") loadReview();
  }, wait);
}

function move(index, delta) {
  const to = index + delta;
  if (to < 0 || to >= state.queue.length) return;
  [state.order[index], state.order[to]] = [state.order[to], state.order[index]];
  [state.queue[index], state.queue[to]] = [state.queue[to], state.queue[index]];
  state.selected = to;
  renderQueue();
}

function reviewRow(row, index) {
  const label = row.state.replace("_", " ");
  return el("li", { class: `review ${row.state}${index === state.selected ? " selected" : ""}`, "data-server": row.server,
    onclick: () => { state.selected = index; markSelected(); } },
    el("header", {},
      el("strong", { class: "name" }, row.server),
      el("span", { class: "branch" }, row.branch || ""),
      el("span", { class: `badge ${row.state}` }, label),
      row.changed_since_review ? el("span", { class: "badge changed" }, "changed since") : null,
      row.check ? el("span", { class: `badge check-${row.check}` }, `check ${row.check}`) : null),
    el("div", { class: "meta" },
      el("span", {}, `${row.ahead} commit${row.ahead === 1 ? "" : "s"} ahead${row.uncommitted ? " + uncommitted" : ""}`),
      row.diffstat ? el("span", { class: "diffstat" }, row.diffstat) : null,
      row.last_job ? el("span", { class: "last-job" }, row.last_job) : null),
    row.conflicts.length ? el("div", { class: "conflicts" }, row.conflicts.map((c) =>
      el("div", {}, `may conflict with ${c.server}: ${c.files.join(", ")}`))) : null,
    row.error ? el("div", { class: "warning" }, row.error) : null,
    el("ul", { class: "commits" }, row.commits.slice(0, 5).map((c) => el("li", {}, el("code", {}, c.id), " ", c.subject))),
    row.note ? el("div", { class: "note" }, "changes requested: ", row.note) : null,
    el("div", { class: "actions" },
      el("button", { type: "button", onclick: () => { location.hash = `#diff/${row.server}`; } }, "Diff"),
      el("button", { type: "button", onclick: () => setReview(row.server, "reviewed") }, "Reviewed"),
      el("button", { type: "button", class: "approve", onclick: () => setReview(row.server, "approved") }, "Approve"),
      el("button", { type: "button", onclick: () => requestChanges(row.server) }, "Request changes…"),
      el("button", { type: "button", title: "land earlier", onclick: (e) => { e.stopPropagation(); move(index, -1); } }, "↑"),
      el("button", { type: "button", title: "land later", onclick: (e) => { e.stopPropagation(); move(index, 1); } }, "↓")));
}

function renderQueue() {
  $("#queue").replaceChildren(...state.queue.map(reviewRow));
  $("#no-review").hidden = state.queue.length > 0;
}

function markSelected() {
  document.querySelectorAll("#queue > li").forEach((node, i) => node.classList.toggle("selected", i === state.selected));
  const node = document.querySelectorAll("#queue > li")[state.selected];
  if (node) node.scrollIntoView({ block: "nearest" });
}

async function setReview(server, value) {
  if (await act("review", { server, state: value })) await loadReview();
}

async function requestChanges(server) {
  const done = await act("request_changes", (answer) => ({ server, note: answer.text, send: answer.send }),
    `Request changes on ${server}: what should change?`, { input: "the note (kept with the review)", send: true,
      ok: "Request changes" });
  if (done) await loadReview();
}

async function landApproved() {
  const approved = state.queue.filter((r) => r.state === "approved").map((r) => r.server);
  if (!approved.length) { toast("no approved box to land: approve some first (a)", "error"); return; }
  const into = $("#land-into").value.trim();
  const result = await act("land", { servers: approved, into: into || null },
    `Land ${approved.join(" → ")} into ${into || "the repo's current branch"}, in this order? It stops at the first conflict.`,
    { ok: "Land" });
  const box = $("#land-result");
  if (result) {
    const o = result.outcome;
    box.replaceChildren(
      el("div", {}, `landed into ${o.into}: ${o.landed.join(", ") || "nothing"}${o.commit ? ` (now ${o.commit.slice(0, 12)})` : ""}`),
      o.conflict_box ? el("div", { class: "conflict" }, `stopped at ${o.conflict_box}: ${o.conflict_files.join(", ")} conflict` +
        (o.conflict_with.length ? ` with ${o.conflict_with.join(", ")}` : "") +
        (o.not_tried.length ? `; not tried: ${o.not_tried.join(", ")}` : "")) : null);
    box.className = `result ${o.ok ? "ok" : "conflict"}`;
    box.hidden = false;
    await loadReview();
  }
}

// ---- diff (diff2html, with highlight.js inside, loaded the first time a diff is shown)

function diffLibrary() {
  if (!diffLibrary.loading) {
    diffLibrary.loading = new Promise((resolve, reject) => {
      const script = el("script", { src: "static/vendor/diff2html-ui-slim.min.js" });
      script.addEventListener("load", resolve);
      script.addEventListener("error", () => reject(new Error("could not load the diff viewer")));
      document.head.append(script);
    });
  }
  return diffLibrary.loading;
}

async function showDiff(server) {
  state.diffServer = server;
  $("#diff-title").textContent = server;
  $("#diff").replaceChildren(el("p", { class: "loading" }, "reading the diff…"));
  $("#diff-commits").replaceChildren();
  try {
    const [response] = await Promise.all([fetch(`api/diff/${encodeURIComponent(server)}`), diffLibrary()]);
    const diff = await response.json();
    if (!response.ok) throw new Error(diff.error || `HTTP ${response.status}`);
    if (state.diffServer !== server) return;
    $("#diff-commits").replaceChildren(...diff.commits.map((c) => el("li", {}, c)));
    $("#diff-note").hidden = !diff.truncated;
    $("#diff-note").textContent = diff.truncated ? `the diff is ${diff.diff_bytes} bytes; cut here` : "";
    state.diffText = diff.diff;
    drawDiff();
  } catch (error) {
    $("#diff").replaceChildren(el("p", { class: "warning" }, error.message));
  }
}

function drawDiff() {
  const target = $("#diff");
  target.replaceChildren();
  if (!state.diffText) { target.append(el("p", { class: "empty" }, "no changes")); return; }
  const ui = new Diff2HtmlUI(target, state.diffText, {
    outputFormat: state.diffFormat, drawFileList: true, matching: "lines", highlight: true,
    fileListToggle: false, synchronisedScroll: true,
  });
  ui.draw();
  ui.highlightCode();
  $("#diff-format").textContent = state.diffFormat === "side-by-side" ? "Unified" : "Side by side";
}

// ---- plans: each plan's task graph, in columns by dependency depth

const RUNNING_TASK = ["starting", "running", "checking", "fetching"];

function renderPlans() {
  const plans = (state.fleet && state.fleet.plans) || [];
  $("#no-plans").hidden = plans.length > 0;
  $("#plans").replaceChildren(...plans.map((plan) => {
    const depth = {};
    const byId = Object.fromEntries(plan.tasks.map((t) => [t.id, t]));
    const level = (id, seen = new Set()) => {
      if (depth[id] !== undefined) return depth[id];
      if (seen.has(id)) return 0;
      seen.add(id);
      const deps = (byId[id] && byId[id].depends_on) || [];
      depth[id] = deps.length ? 1 + Math.max(...deps.map((d) => level(d, seen))) : 0;
      return depth[id];
    };
    plan.tasks.forEach((t) => level(t.id));
    const columns = [];
    for (const t of plan.tasks) (columns[depth[t.id]] = columns[depth[t.id]] || []).push(t);
    return el("article", { class: `plan ${plan.state}`, "data-plan": plan.plan_id },
      el("header", {}, el("strong", {}, plan.name), el("code", {}, plan.plan_id),
        el("span", { class: `badge ${plan.state}` }, plan.state), plan.reason ? el("span", {}, plan.reason) : null),
      el("div", { class: "graph" }, columns.map((tasks) => el("div", { class: "column" }, tasks.map((t) =>
        el("div", { class: `task ${t.state}`, "data-task": t.id },
          el("strong", {}, t.id), el("span", { class: `badge ${t.state}` }, t.state),
          t.box ? el("div", {}, "box ", el("code", {}, t.box)) : null,
          t.check ? el("div", { class: `check-${t.check}` }, `check ${t.check}`) : null,
          t.elapsed_s !== null ? el("div", { class: RUNNING_TASK.includes(t.state) ? "elapsed" : "took",
            "data-started": t.started_at }, duration(t.elapsed_s)) : null,
          t.depends_on.length ? el("div", { class: "after" }, `after ${t.depends_on.join(", ")}`) : null,
          t.reason ? el("div", { class: "warning" }, t.reason) : null,
          t.job_id ? el("a", { href: `#job/${t.job_id}` }, "output") : null))))));
  }));
}

// ---- navigation and keys

function route() {
  const [view, arg] = (location.hash.slice(1) || "fleet").split(/\/(.*)/s);
  const known = ["fleet", "review", "plans", "job", "diff"];
  state.view = known.includes(view) ? view : "fleet";
  for (const section of document.querySelectorAll("main > section")) section.hidden = section.dataset.view !== state.view;
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("current", link.dataset.nav === state.view);
  if (state.view !== "job") state.jobRun++;
  if (state.view === "job" && arg) showJob(decodeURIComponent(arg));
  if (state.view === "diff" && arg) showDiff(decodeURIComponent(arg));
  if (state.view === "review") loadReview();
  if (state.view === "plans") renderPlans();
}

document.addEventListener("keydown", (event) => {
  if (state.view !== "review" || event.target.closest("input, textarea, dialog") || event.metaKey || event.ctrlKey) return;
  const row = state.queue[state.selected];
  if (event.key === "j") { state.selected = Math.min(state.selected + 1, state.queue.length - 1); markSelected(); }
  else if (event.key === "k") { state.selected = Math.max(state.selected - 1, 0); markSelected(); }
  else if (event.key === "Enter" && row) location.hash = `#diff/${row.server}`;
  else if (event.key === "a" && row) setReview(row.server, "approved");
  else return;
  event.preventDefault();
});

async function start() {
  const response = await fetch("api/session");
  if (response.ok) state.csrf = (await response.json()).csrf;
  $("#land-approved").addEventListener("click", landApproved);
  $("#review-refresh").addEventListener("click", loadReview);
  $("#diff-format").addEventListener("click", () => {
    state.diffFormat = state.diffFormat === "side-by-side" ? "line-by-line" : "side-by-side";
    drawDiff();
  });
  window.addEventListener("hashchange", route);
  route();
  connect();
  setInterval(tick, 1000);
}

start();
