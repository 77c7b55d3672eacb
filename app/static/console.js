// The operator console: one view at a time (the URL's #hash), each refreshing itself from the API
// with the visitor's key. Nothing here decides what a key may do: the API answers 403 naming the
// scope, and the view shows that answer in its place. No library: the charts are drawn as SVG.
"use strict";

const KEY = "ingest-api-key";
const number = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });
const TERMINAL = new Set(["succeeded", "failed", "dead-lettered"]);
const $ = (selector, root = document) => root.querySelector(selector);

// The key and the calls ---------------------------------------------------------------------------

function askForKey(reason) {
  $("#login-reason").textContent = reason;
  $("#login").hidden = false;
}

$("#login").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = $("#api-key").value.trim();
  if (key) sessionStorage.setItem(KEY, key);
  $("#api-key").value = "";
  $("#login").hidden = true;
  current && current.refresh();
});
$("#forget").addEventListener("click", (event) => {
  event.preventDefault();
  sessionStorage.removeItem(KEY);
});

class Refused extends Error {}

/** JSON from the API; a 401 asks for a key, other refusals throw with the API's own words. */
async function call(path, { method = "GET", body } = {}) {
  const key = sessionStorage.getItem(KEY);
  const headers = key ? { Authorization: "Bearer " + key } : {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, cache: "no-store",
                                       body: body === undefined ? undefined : JSON.stringify(body) });
  const answer = await response.json().catch(() => ({}));
  if (response.status === 401) {
    askForKey("This console needs an API key. " + (answer.detail || ""));
    $("#updated").textContent = "waiting for a key";
    throw new Refused(answer.detail || "no key");
  }
  if (!response.ok) {
    const detail = typeof answer.detail === "string" ? answer.detail
      : Array.isArray(answer.detail) ? answer.detail.map((e) => `${e.field}: ${e.message}`).join("; ")  // app/errors.py
      : `HTTP ${response.status}`;
    const error = new Refused(detail);
    error.status = response.status;
    throw error;
  }
  $("#login").hidden = true;
  return answer;
}

/** Show a view's refusal (or clear it), in the view itself. */
function refusal(view, error) {
  const box = $(".refused", view);
  if (!box) return;
  box.hidden = !error;
  box.textContent = error ? error.message : "";
}

function updated(what) {
  $("#updated").textContent = what || "updated " + new Date().toLocaleTimeString();
}

const show = (value) => (value === null || value === undefined ? "n/a" : number.format(value));

function setNumber(id, value, { alertAbove } = {}) {
  const element = document.getElementById(id);
  element.textContent = show(value);
  element.dataset.value = value === null || value === undefined ? "" : String(value);
  if (alertAbove !== undefined) element.classList.toggle("alert", value > alertAbove);
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function when(ms) {
  return ms ? new Date(ms).toLocaleString() : "–";
}

// Views -------------------------------------------------------------------------------------------

/** A view refreshes every `every` ms while shown; `refresh` may throw (the view shows why). */
class View {
  constructor(name, every, refresh) {
    this.name = name;
    this.section = document.getElementById("view-" + name);
    this.every = every;
    this.work = refresh;
    this.timer = null;
  }
  async refresh() {
    clearTimeout(this.timer);
    try {
      await this.work(this.section);
      refusal(this.section, null);
      updated();
    } catch (error) {
      if (error instanceof Refused) refusal(this.section, error);
      else updated("API unreachable (" + error.message + "); retrying");
    } finally {
      if (this.every && current === this) this.timer = setTimeout(() => this.refresh(), this.every);
    }
  }
  stop() { clearTimeout(this.timer); }
}

// Overview: the numbers of GET /status, and charts of GET /status/history.

function source(id, state) {
  const element = document.getElementById(id);
  element.textContent = state;
  element.className = state === "ok" ? "" : "down";
}

let historyAt = 0;

async function overview() {
  const status = await call("/status");
  const ingest = status.queues.ingest || {};
  const tasks = status.queues.tasks || {};
  setNumber("queue-depth", ingest.ready);
  setNumber("delayed", ingest.delayed);
  setNumber("messages-per-second", status.messages_per_second);
  setNumber("rows-written", status.rows_written);
  setNumber("messages-written", status.messages_written);
  setNumber("duplicates", status.duplicates);
  setNumber("retries", status.retries);
  setNumber("dead-letters", status.dead_letters, { alertAbove: 0 });
  setNumber("workers", status.workers);
  setNumber("tasks-depth", tasks.ready);
  source("rabbitmq", status.rabbitmq);
  source("redis", status.redis);
  const faults = status.sink_faults;  // null while Redis is unavailable
  source("sink", faults === null ? "unknown" : faults.length === 0 ? "ok"
    : `${faults.length} worker(s) cannot write: ${faults[0].reason}; holding ${faults.reduce((n, f) => n + f.waiting, 0)} message(s), retrying`);
  if (Date.now() - historyAt > 2000) {  // samples come every few seconds; no need to ask each second
    historyAt = Date.now();
    const history = await call("/status/history");
    $("#history-minutes").textContent = Math.round(history.seconds / 60);
    for (const chart of document.querySelectorAll(".chart")) draw(chart, history);
  }
}

const SVG = "http://www.w3.org/2000/svg";
const COLOURS = ["var(--accent)", "var(--accent2)"];

/** A line per series over the history's window; the newest value of each beside the title. */
function draw(chart, history) {
  const names = chart.dataset.series.split(" ");
  const points = history.points;
  const end = points.length ? points[points.length - 1].t : Date.now() / 1000;
  const start = end - history.seconds;
  const values = names.map((name) => points.map((p) => [p.t, p[name]]).filter(([, v]) => v !== null && v !== undefined));
  const top = Math.max(1, ...values.flat().map(([, v]) => v)) * 1.1;
  const [width, height] = [300, 100];
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const axis = document.createElementNS(SVG, "line");
  Object.entries({ x1: 0, x2: width, y1: height - 0.5, y2: height - 0.5, stroke: "#d0d5dd" })
    .forEach(([k, v]) => axis.setAttribute(k, v));
  svg.append(axis);
  values.forEach((series, index) => {
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", COLOURS[index]);
    line.setAttribute("stroke-width", "1.5");
    line.setAttribute("vector-effect", "non-scaling-stroke");
    line.setAttribute("points", series.map(([t, v]) =>
      `${((t - start) / (end - start) * width).toFixed(1)},${(height - v / top * (height - 4)).toFixed(1)}`).join(" "));
    svg.append(line);
  });
  const newest = values.map((series) => (series.length ? series[series.length - 1][1] : null));
  const legend = document.createElement("div");
  legend.className = "legend";
  legend.innerHTML = `<span class="label"></span><span class="now"></span>`;
  legend.firstChild.textContent = chart.dataset.title;
  legend.lastChild.textContent = newest.map(show).join(" / ");
  const scale = document.createElement("div");
  scale.className = "hint";
  scale.textContent = `top ${show(top)} · ${Math.round(history.seconds / 60)} min`;
  chart.replaceChildren(legend, svg, scale);
  chart.dataset.points = String(Math.max(...values.map((s) => s.length)));
  chart.dataset.newest = newest.map((v) => (v === null ? "" : String(v))).join(" ");
  chart.dataset.peak = String(Math.max(0, ...values.flat().map(([, v]) => v)));
}

// Queues: every queue of GET /status.

async function queues(section) {
  const status = await call("/status");
  const body = $("#queues-table tbody", section);
  body.replaceChildren();
  for (const [name, queue] of Object.entries(status.queues)) {
    const row = body.insertRow();
    row.dataset.queue = name;
    cell(row, name);
    for (const field of ["ready", "unacked", "consumers", "delayed", "dead_letters"]) {
      cell(row, show(queue[field]), "num").dataset.field = field;
    }
    const age = queue.oldest_ready_seconds;
    cell(row, age === null || age === undefined ? "–" : `≤ ${show(age)} s`, "num").dataset.field = "oldest_ready_seconds";
  }
  if (!Object.keys(status.queues).length) {
    const row = body.insertRow();
    cell(row, "RabbitMQ: " + status.rabbitmq).colSpan = 7;
  }
}

// Dead letters: a page of GET /dead-letters; replay or discard the selected ones.

const deadLetters = { offset: 0, pages: [], next: null };

function selectedIds() {
  return [...document.querySelectorAll("#dl-table tbody input:checked")].map((box) => box.value);
}

function selectionChanged() {
  const chosen = selectedIds().length;
  $("#dl-replay-selected").disabled = chosen === 0;
  $("#dl-discard-selected").disabled = chosen === 0;
}

async function deadLetterPage(section) {
  const queue = $("#dl-queue").value;
  const kept = new Set(selectedIds());
  const page = await call(`/dead-letters?queue=${encodeURIComponent(queue)}&limit=20&offset=${deadLetters.offset}`);
  $("#dl-count").textContent = `${number.format(page.count)} dead letter(s) in ${queue}`;
  const body = $("#dl-table tbody", section);
  body.replaceChildren();
  for (const letter of page.messages) {
    const row = body.insertRow();
    row.dataset.messageId = letter.message_id;
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = letter.message_id;
    box.checked = kept.has(letter.message_id);
    box.addEventListener("change", selectionChanged);
    row.insertCell().append(box);
    const id = row.insertCell();
    const link = document.createElement("a");
    link.href = "#lookup/" + encodeURIComponent(letter.message_id);
    link.textContent = letter.message_id;
    id.append(link);
    cell(row, letter.reason);
    cell(row, String(letter.attempts), "num");
    cell(row, letter.tenant || "–");
    cell(row, letter.key || "–");
    cell(row, when(letter.rejected_at));
  }
  deadLetters.next = page.next_offset;
  $("#dl-prev").disabled = deadLetters.pages.length === 0;
  $("#dl-next").disabled = page.next_offset === null;
  $("#dl-page").textContent = page.messages.length
    ? `${deadLetters.offset + 1}–${deadLetters.offset + page.messages.length} of ${number.format(page.count)}` : "";
  $("#dl-all").checked = false;
  selectionChanged();
}

/** Why fewer went than were chosen: gone already, or being read by someone else at that moment. */
function missing(chosen, done) {
  const left = chosen.length - new Set(done).size;
  return left > 0 ? ` (${left} not found: replayed or discarded already, or being listed by someone else; refresh and try again)` : "";
}

async function act(path, body, done) {
  try {
    const answer = await call(path, { method: "POST", body });
    $("#result-line").textContent = done(answer);
    $("#result-line").className = "";
  } catch (error) {
    $("#result-line").textContent = error.message;
    $("#result-line").className = "down";
  }
  views["dead-letters"].refresh();
}

$("#dl-replay-selected").addEventListener("click", () => {
  const ids = selectedIds();
  act("/dead-letters/replay", { queue: $("#dl-queue").value, message_ids: ids },
      (a) => `Replayed ${a.replayed.length} of ${ids.length} selected${missing(ids, a.replayed)}; ${a.remaining} dead letter(s) left.`);
});
$("#dl-replay-all").addEventListener("click", () => {
  act("/dead-letters/replay", { queue: $("#dl-queue").value },
      (a) => `Replayed ${a.replayed.length}; ${a.remaining} dead letter(s) left.`);
});
$("#dl-discard-selected").addEventListener("click", () => {
  const ids = selectedIds();
  if (!confirm(`Discard ${ids.length} dead letter(s) for good? Their payloads exist nowhere else, and they will never be written.`)) return;
  act("/dead-letters/discard", { queue: $("#dl-queue").value, message_ids: ids },
      (a) => `Discarded ${a.discarded.length} of ${ids.length} selected${missing(ids, a.discarded)}; ${a.remaining} dead letter(s) left.`);
});
$("#dl-refresh").addEventListener("click", () => views["dead-letters"].refresh());
$("#dl-all").addEventListener("change", (event) => {
  document.querySelectorAll("#dl-table tbody input").forEach((box) => { box.checked = event.target.checked; });
  selectionChanged();
});
$("#dl-queue").addEventListener("change", () => {
  Object.assign(deadLetters, { offset: 0, pages: [], next: null });
  $("#result-line").textContent = "";
  views["dead-letters"].refresh();
});
$("#dl-next").addEventListener("click", () => {
  deadLetters.pages.push(deadLetters.offset);
  deadLetters.offset = deadLetters.next;
  views["dead-letters"].refresh();
});
$("#dl-prev").addEventListener("click", () => {
  deadLetters.offset = deadLetters.pages.pop() || 0;
  views["dead-letters"].refresh();
});

// Message lookup: GET /api/{id}, or GET /tasks/{id}; live until the message is done.

let lookedUp = "";

async function lookup(section) {
  const id = lookedUp;
  const record = $("#lookup-record", section);
  views.lookup.every = 0;  // until this one is known not to be done yet
  if (!id) { record.hidden = true; return; }
  let status;
  try {
    status = await call("/api/" + encodeURIComponent(id));
  } catch (error) {
    if (error.status !== 404) throw error;
    status = await call("/tasks/" + encodeURIComponent(id));  // a 404 here too says "no message"
  }
  record.replaceChildren();
  record.dataset.state = status.state;
  const add = (term, value, pre = false) => {
    if (value === null || value === undefined) return;
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    if (pre) {
      const block = document.createElement("pre");
      block.textContent = JSON.stringify(value, null, 2);
      dd.append(block);
    } else dd.textContent = value;
    dd.dataset.field = term;
    record.append(dt, dd);
  };
  add("message", status.message_id);
  add("state", status.state);
  add("queue", status.queue);
  add("actor", status.actor);
  add("attempts", status.attempts);
  add("last error", status.last_error);
  if (status.progress) {
    const p = status.progress;
    if (p.seconds !== undefined && p.seconds_left !== undefined) {
      const dt = document.createElement("dt");
      dt.textContent = "progress";
      const dd = document.createElement("dd");
      const bar = document.createElement("progress");
      bar.max = p.seconds;
      bar.value = p.seconds - p.seconds_left;
      dd.append(bar, ` ${p.seconds_left} of ${p.seconds} s left`);
      dd.dataset.field = "progress";
      dd.dataset.secondsLeft = String(p.seconds_left);
      record.append(dt, dd);
    } else add("progress", p, true);
  }
  add("result", status.result, true);
  add("enqueued", status.enqueued_at && when(status.enqueued_at));
  add("started", status.started_at && when(status.started_at));
  add("finished", status.finished_at && when(status.finished_at));
  record.hidden = false;
  views.lookup.every = TERMINAL.has(status.state) ? 0 : 1000;  // live until it is done
}

$("#lookup-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const id = $("#lookup-id").value.trim();
  if (id) location.hash = "#lookup/" + encodeURIComponent(id);
});

// Models: GET /models, and POST /tasks/train.

async function models(section) {
  const list = await call("/models");
  const body = $("#models-table tbody", section);
  body.replaceChildren();
  for (const model of [...list.models].reverse()) {  // newest first
    const row = body.insertRow();
    row.dataset.modelId = model.model_id;
    const id = row.insertCell();
    const code = document.createElement("code");
    code.textContent = model.model_id;
    id.append(code);
    cell(row, model.model);
    cell(row, model.dataset);
    cell(row, model.accuracy.toFixed(3), "num");
    cell(row, model.f1_macro.toFixed(3), "num");
    cell(row, `${model.train_rows} / ${model.test_rows}`, "num");
    cell(row, when(model.created_at));
  }
  if (!list.models.length) cell(body.insertRow(), "No model yet: start a training below.").colSpan = 7;
}

$("#train-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const result = $("#train-result");
  let params;
  try {
    params = JSON.parse($("#train-params").value || "{}");
  } catch (error) {
    result.textContent = "Parameters: not JSON (" + error.message + ")";
    result.className = "down";
    return;
  }
  const request = { model: $("#train-model").value, dataset: $("#train-dataset").value.trim(), params };
  const target = $("#train-target").value.trim();
  if (target) request.target = target;
  try {
    const answer = await call("/tasks/train", { method: "POST", body: request });
    result.replaceChildren("Training queued: ");
    const link = document.createElement("a");
    link.href = "#lookup/" + encodeURIComponent(answer.message_id);
    link.textContent = answer.message_id;
    link.id = "train-message";
    result.append(link);
    result.className = "";
  } catch (error) {
    result.textContent = error.message;
    result.className = "down";
  }
});

// The router ---------------------------------------------------------------------------------------

const views = {
  overview: new View("overview", 1000, overview),
  queues: new View("queues", 2000, queues),
  // On demand only: listing holds the page's messages (unacked) while it reads them, and a replay or
  // discard running meanwhile would not find them.
  "dead-letters": new View("dead-letters", 0, deadLetterPage),
  lookup: new View("lookup", 0, lookup),
  models: new View("models", 5000, models),
};
let current = null;

function route() {
  const [name, ...rest] = location.hash.replace(/^#/, "").split("/");
  let argument = rest.join("/");
  try { argument = decodeURIComponent(argument); } catch (error) { /* shown as typed */ }
  const next = views[name] || views.overview;
  if (next === views.lookup) {
    if (argument !== lookedUp) $("#lookup-record").hidden = true;  // never another message's record
    lookedUp = argument;
    $("#lookup-id").value = lookedUp;
  }
  if (current && current !== next) current.stop();
  current = next;
  for (const view of Object.values(views)) view.section.hidden = view !== next;
  for (const link of document.querySelectorAll("nav#views a")) {
    link.classList.toggle("current", link.getAttribute("href") === "#" + next.name);
  }
  next.refresh();
}

window.addEventListener("hashchange", route);
route();
