"use strict";
// The duty console: login, navigation, the live alarm board (SSE), sound and notifications.
// Other pages (history, devices, installer, admin) are in pages.js. No build step.
const C = window.C = {
  lang: localStorage.getItem("lang") || "zh", csrf: null, me: null,
  alarms: new Map(), cards: new Map(), source: null, reasons: {}, view: "board",
  modes: [],   // devices in test/maintenance mode now (/api/devices/modes, event: modes)
};
const $ = (s, root = document) => root.querySelector(s);
const $$ = (s, root = document) => [...root.querySelectorAll(s)];
function t(k, vars) {
  let s = (I18N[C.lang] && I18N[C.lang][k]) || I18N.zh[k] || k;
  if (vars) for (const [n, v] of Object.entries(vars)) s = s.split("{" + n + "}").join(v);
  return s;
}
const known = k => Object.prototype.hasOwnProperty.call(I18N.zh, k);
// -- server errors in words: the API's machine code (gateway/api/errors.py) through the
// catalogue, never its English detail; an unknown code: a generic message naming the code
function fieldLabel(loc) {
  const path = (loc || []).slice(1);   // ["body", "devices", 0, "id"] -> device 1 · 设备编号
  const parts = [];
  for (let i = 0; i < path.length; i++) {
    if (path[i] === "devices" && Number.isInteger(path[i + 1])) { parts.push(t("f_device_n", {n: path[i + 1] + 1})); i++; continue; }
    const k = "f_" + path[i]; if (known(k)) parts.push(t(k));
  }
  return parts.join(" · ");
}
function fieldText(e) {
  const k = "v_" + (e.code || e.type);
  return known(k) ? t(k, e.params || e.ctx || {}) : t("v_invalid");
}
function errorText(body, status) {
  const d = body.detail;
  if (Array.isArray(d) && d.length) return d.map(e => { const f = fieldLabel(e.loc); return (f ? f + (C.lang === "zh" ? "：" : ": ") : "") + fieldText(e); }).join(C.lang === "zh" ? "；" : "; ");
  if (body.code && known("err_" + body.code)) return t("err_" + body.code, body.params || {});
  return t("err_generic", {code: body.code || status});
}
// -- readings in words: kind, value (per kind), unit, quality
const UNIT = {degC: "°C", m3: "m³", lqi: ""};
function kindLabel(k) { return known("kind_" + k) ? t("kind_" + k) : k; }
function readingValue(kind, v, unit) {
  if (v === null || v === undefined) return t("no_value");
  if (typeof v === "boolean" || typeof v === "string") {
    const k = `kv_${kind}_${v}`;
    if (known(k)) return t(k);
    if (typeof v === "boolean") return t(v ? "val_true" : "val_false");
    return null;   // a device's own word (a button action we do not know): shown as it is
  }
  const u = unit in UNIT ? UNIT[unit] : (unit || "");
  return `${typeof v === "number" ? Math.round(v * 100) / 100 : v}${u ? " " + u : ""}`;
}
function qualityLabel(q) { return q && known("q_" + q) ? t("q_" + q) : (q || ""); }
function esc(s) { return String(s ?? "").replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c])); }
function can(perm) { return !!C.me && C.me.permissions.includes(perm); }
const SEV = {critical: 0, major: 1, minor: 2, info: 3};
window.__drawn = {};  // alarm id -> epoch ms when its card was drawn (benchmark, tests)

async function api(path, opts = {}) {
  const headers = {"Content-Type": "application/json"};
  if (C.csrf) headers["X-CSRF-Token"] = C.csrf;
  let r;
  try { r = await fetch(path, {credentials: "same-origin", ...opts, headers}); }
  catch (e) { throw Object.assign(new Error(t("err_network")), {status: 0, code: "network"}); }
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    const d = body.detail;
    let msg = errorText(body, r.status);
    // a session that ended while the board was open: ask for the password again, keep the board
    if (r.status === 401 && C.me && !path.startsWith("/api/login")) { sessionLost(); msg = t("session_expired"); }
    throw Object.assign(new Error(msg), {status: r.status, detail: d, code: body.code});
  }
  return body;
}
function toast(msg, bad) {
  const el = $("#toast"); el.textContent = msg; el.hidden = false; el.classList.toggle("bad", !!bad);
  clearTimeout(toast.timer); toast.timer = setTimeout(() => { el.hidden = true; }, 4000);
}
function fmtTime(iso) { return iso ? new Date(iso).toLocaleString(C.lang === "zh" ? "zh-CN" : "en-GB") : ""; }
function fmtAgo(ms) {
  const s = Math.max(0, Math.floor(ms / 1000)), h = Math.floor(s / 3600), m = Math.floor(s % 3600 / 60);
  return h ? t("ago_h", {h, m}) : m ? t("ago_m", {m, s: s % 60}) : t("ago_s", {s});
}
function fmtDur(ms) {
  const s = Math.max(0, Math.floor(ms / 1000)), h = Math.floor(s / 3600), m = Math.floor(s % 3600 / 60), ss = s % 60;
  const two = n => String(n).padStart(2, "0");
  return h ? `${h}:${two(m)}:${two(ss)}` : `${two(m)}:${two(ss)}`;
}

// who did it, in words: a user's name, the case system's handler, the device, the system
function actorLabel(actor) {
  if (!actor) return "";
  if (actor.startsWith("case_system:")) { const who = actor.slice(12); return who ? t("actor_case_handler", {name: who}) : t("actor_case_system"); }
  if (actor === "system") return t("actor_system");
  if (actor === "device") return t("actor_device");
  if (actor.startsWith("rule:")) return t("actor_rule");
  if (actor === "cli" || actor === "setup") return t("actor_" + actor);
  if (actor.startsWith("token:")) return t("actor_token", {name: actor.slice(6)});
  return actor;
}
function caseStatusLabel(s) { return s ? t("cs_" + s) : ""; }
// a device type in words (a type the console does not know stays as it is)
function typeLabel(x) { return x && I18N.zh["type_" + x] ? t("type_" + x) : (x || ""); }

// -- i18n and navigation ------------------------------------------------------------------
function applyLang() {
  document.documentElement.lang = C.lang === "zh" ? "zh-CN" : "en";
  $$("[data-i18n]").forEach(e => { e.textContent = t(e.dataset.i18n); });
  $$("[data-i18n-placeholder]").forEach(e => { e.placeholder = t(e.dataset.i18nPlaceholder); });
  document.title = t("title");
  $("#lang").value = C.lang;
  updateMute();
  const conn = $("#conn");   // the header's live-stream state and the user, in the new language
  if (conn && conn.dataset.state) conn.textContent = (conn.dataset.state === "live" ? "● " : "○ ") + t(conn.dataset.state);
  if (C.me) $("#who").textContent = `${C.me.user} · ${t("role_" + C.me.role)}`;
  if (C.me) { redrawBoard(true); if (window.Pages) Pages.show(C.view); }
}
$("#lang").onchange = e => { C.lang = e.target.value; localStorage.setItem("lang", C.lang); applyLang(); };
$("#nav").addEventListener("click", e => {
  const b = e.target.closest("[data-view]"); if (!b) return;
  show(b.dataset.view);
});
function show(view) {
  C.view = view;
  $$("#nav .tab").forEach(b => b.classList.toggle("active", b.dataset.view === view));
  $$(".view").forEach(s => { s.hidden = s.id !== "view-" + view; });
  if (view !== "board" && window.Pages) Pages.show(view);
}

// -- the board -----------------------------------------------------------------------------
function tierName(name) { const k = "tier_" + name; const s = t(k); return s === k ? name : s; }
function escalation(a, now) {
  const e = C.me && C.me.escalation;
  if (!e || a.state !== "raised" || SEV[a.severity] > SEV[e.min_severity]) return "";
  if (a.escalation_stopped) return `<span class="esc done">${esc(t("escalation_stopped"))}</span>`;
  const next = e.tiers[a.escalation_tier || 0];
  if (!next) return `<span class="esc done">${esc(t("escalated", {tier: tierName(a.escalation_tier_name || "")}))}</span>`;
  const due = Date.parse(a.raised_at) + next.after_s * 1000;
  return `<span class="esc" data-due="${due}" data-tier="${esc(next.name)}">${esc(t("escalate_in", {tier: tierName(next.name)}))} <b>${fmtDur(due - now)}</b></span>`;
}
function householdCard(a) {
  const h = a.household, g = a.grid;
  const place = h ? `<b>${esc(h.address)}</b>${h.lives_alone ? ` <span class="tag">${t("lives_alone")}</span>` : ""}` : esc(a.device_id || "");
  const grid = g ? `${t("grid")} ${esc(g.name)} (${esc(g.code)})${g.grid_member ? ` · ${t("member")} ${esc(g.grid_member)}` : ""}` : esc(a.grid_cell || "");
  const contacts = h && h.contacts.length ? `<div class="contacts">${t("contacts")}: ${h.contacts.map(c =>
    `${esc(c.name)}${c.relation ? "（" + esc(c.relation) + "）" : ""} ${/\*/.test(c.phone) ? esc(c.phone) : `<a href="tel:${esc(c.phone)}">${esc(c.phone)}</a>`}`).join("，")}</div>` : "";
  return `<div class="household"><div>${place}${modeTags(a)}</div><div class="meta">${grid}</div>${contacts}</div>`;
}
// -- devices in test or maintenance mode: their triggers are tests, not alarms, until the mode ends
function fmtUntil(iso) {
  const d = new Date(iso), loc = C.lang === "zh" ? "zh-CN" : "en-GB";
  const time = d.toLocaleTimeString(loc, {hour: "2-digit", minute: "2-digit"});
  return d.toDateString() === new Date().toDateString() ? time : `${d.toLocaleDateString(loc, {month: "numeric", day: "numeric"})} ${time}`;
}
function modeTag(m, withName) {
  const what = t("mode_on_" + m.mode) + (withName ? "：" + (m.name || m.device_id) : "");
  return `<span class="tag test mode-tag" data-device="${esc(m.device_id)}" data-mode="${esc(m.mode)}" title="${esc(m.device_id)}">${esc(what)}${m.until ? " · " + esc(t("mode_until", {time: fmtUntil(m.until)})) : ""}</span>`;
}
function modeTags(a) {   // the household card: every device of the household (or the shared device) in such a mode
  const list = C.modes.filter(m => a.household_id ? m.household_id === a.household_id : m.device_id === a.device_id);
  return list.map(m => " " + modeTag(m, true)).join("");
}
function setModes(data) {
  const before = JSON.stringify(C.modes);
  C.modes = (data && data.devices) || [];
  if (JSON.stringify(C.modes) === before) return;
  redrawBoard(true);
  if (window.Pages && Pages.modesChanged) Pages.modesChanged();
}
function loadModes() { return api("/api/devices/modes").then(setModes).catch(() => {}); }
function caseLine(a) {
  if (a.test) return "";
  const closedOpen = a.case_status === "closed" && a.state !== "resolved";  // site: staff confirm
  const status = a.case_id ? `${t("case")} ${esc(a.case_id)} · ${esc(a.case_status ? t(closedOpen ? "case_closed_confirm" : "cs_" + a.case_status) : "")}` : t("case_none");
  // a refused case in words (工单被拒：…), never the raw reply: docs/case-system.md section 9
  const refused = a.case_refusal ? (a.case_refusal[C.lang] || a.case_refusal.zh) : "";
  if (refused && !a.case_id) return `<span class="error case-refused">${esc(refused)}</span>`;
  return `<span class="case">${status}</span>${refused ? ` <span class="error case-refused">${esc(refused)}</span>` : ""}`;
}
function cardHtml(a, now) {
  const msg = C.lang === "zh" ? a.message_zh : a.message_en;
  return `<div class="line1"><span class="sev ${esc(a.severity)}">${t(a.severity)}</span>
      ${a.test ? `<span class="tag test">${t("test_badge")}</span>` : ""}
      <span class="title">${esc(msg)}</span>${a.count > 1 ? `<span class="count">${a.count}${t("count")}</span>` : ""}
      <span class="state ${esc(a.state)}">${t(a.state)}</span></div>
    ${householdCard(a)}
    <div class="meta"><span class="since" data-since="${Date.parse(a.raised_at)}">${fmtAgo(now - Date.parse(a.raised_at))}</span>
      · ${t("raised_at")} ${esc(fmtTime(a.raised_at))} · ${esc(a.device_id || "")} ${escalation(a, now)} · ${caseLine(a)}
      ${a.ack_by ? ` · ${t("acknowledged")}: ${esc(actorLabel(a.ack_by))}` : ""}</div>`;
}
// The card's controls are drawn apart from the rest and kept while they stay the same, so
// that a live update (case status, escalation) never takes the focus, the typed note or a
// hint away from staff who are working on the card.
function actionsKey(a) { return can("alarms.act") ? [a.state, needsAck(a), C.lang].join("|") : ""; }
function actionsHtml(a) {
  if (!can("alarms.act")) return "";
  return `${a.state === "raised" ? `<button class="primary ack">${t("ack")}</button>` : ""}
      ${needsAck(a) ? `<span class="hint needs-ack">${t("resolve_needs_ack")}</span>` : `
      <select class="reason" aria-label="${t("reason")}"><option value="" selected>${t("choose_reason")}</option>${Object.entries(C.reasons).map(([k, v]) => `<option value="${k}">${esc(v[C.lang] || v.zh)}</option>`).join("")}</select>
      <input class="note" placeholder="${t("note")}" maxlength="1000" aria-label="${t("note")}">
      <button class="resolve">${t("resolve")}</button><span class="error reason-error" role="alert"></span>`}`;
}
// A critical alarm is acknowledged before it can be resolved (the API refuses it too).
function needsAck(a) { return a.severity === "critical" && a.state === "raised"; }
const pending = new Set();
let flushQueued = false;
function upsert(a) {
  const old = C.alarms.get(a.id);
  if (old && old.updated_at > a.updated_at && old.state === "resolved") return;
  const sig = x => [x.updated_at, x.state, x.count, x.escalation_tier, x.case_id, x.case_status, x.case_error].join("|");
  if (old && sig(old) === sig(a) && C.cards.has(a.id)) return;  // unchanged: no redraw
  C.alarms.set(a.id, a);
  if (a.severity === "critical" && a.state === "raised" && !a.test && (!old || old.state !== "raised")) notify(a);
  updateSound();
  pending.add(a.id);
  queueFlush();
}
function queueFlush() {
  if (flushQueued) return;
  flushQueued = true;
  const run = () => { if (flushQueued) { flushQueued = false; flush(); } };
  requestAnimationFrame(run);
  setTimeout(run, 250);  // background tabs do not run animation frames
}
function order(a, b) { return (SEV[a.severity] - SEV[b.severity]) || (b.id - a.id); }
function flush() {
  const box = $("#alarms"), now = Date.now();
  for (const id of pending) {
    const a = C.alarms.get(id);
    let el = C.cards.get(id);
    if (!a || a.state === "resolved") {
      if (el) { el.remove(); C.cards.delete(id); }
      if (a) C.alarms.delete(id);
      continue;
    }
    if (!el) { el = document.createElement("article"); C.cards.set(id, el); }
    el.className = `alarm ${a.severity} ${a.state}${a.test ? " test" : ""}`;
    el.dataset.id = a.id; el.dataset.state = a.state; el.dataset.severity = a.severity;
    let body = el.querySelector(".card-body"), actions = el.querySelector(".actions");
    if (!body) {
      el.innerHTML = `<div class="card-body"></div>`;
      body = el.firstChild; actions = null;
    }
    body.innerHTML = cardHtml(a, now);
    const key = actionsKey(a);
    if (!actions || actions.dataset.key !== key) {   // the controls change: draw them anew
      const keep = actions && actions.querySelector(".note"), note = keep ? keep.value : "";
      const keepR = actions && actions.querySelector(".reason"), reason = keepR ? keepR.value : "";
      if (actions) actions.remove();
      actions = null;
      if (key) {
        actions = document.createElement("div");
        actions.className = "actions"; actions.dataset.key = key;
        actions.innerHTML = actionsHtml(a);
        el.appendChild(actions);
        if (note && actions.querySelector(".note")) actions.querySelector(".note").value = note;
        if (reason && actions.querySelector(".reason")) actions.querySelector(".reason").value = reason;
      }
    }
    window.__drawn[a.id] = Date.now();
  }
  pending.clear();
  const sorted = [...C.alarms.values()].sort(order);
  let prev = null;
  for (const a of sorted) {
    const el = C.cards.get(a.id);
    const want = prev ? prev.nextSibling : box.firstChild;
    if (want !== el) box.insertBefore(el, want);
    prev = el;
  }
  const empty = $("#board-empty");
  if (!sorted.length && !empty) box.insertAdjacentHTML("beforeend", `<p id="board-empty" data-i18n="none">${t("none")}</p>`);
  if (sorted.length && empty) empty.remove();
  summary(sorted);
}
function summary(list) {
  const crit = list.filter(a => a.severity === "critical" && a.state === "raised").length;
  $("#alarms").classList.toggle("calm", crit > 12);
  $("#board-summary").innerHTML = `<span class="pill ${crit ? "critical" : ""}">${t("open_critical")}: <b id="n-critical">${crit}</b></span>
    <span class="pill">${t("open_total")}: <b id="n-open">${list.length}</b></span>${C.modes.length ? `
    <button type="button" class="pill modes" id="modes-pill" title="${esc(C.modes.map(m => `${m.name || m.device_id} · ${t("mode_on_" + m.mode)}${m.until ? " · " + t("mode_until", {time: fmtUntil(m.until)}) : ""}`).join("\n"))}">${t("modes_count")} <b id="n-modes">${C.modes.length}</b></button>` : ""}`;
  document.title = (crit ? `(${crit}) ` : "") + t("title");
}
function redrawBoard(all) {
  if (all) { for (const id of C.alarms.keys()) pending.add(id); }
  flush();
}
// one timer for every "time since" and countdown on the board
setInterval(() => {
  const now = Date.now();
  // a mode's end has come by this browser's clock: ask the gateway (its clock decides; its
  // "modes" event follows the end too)
  if (C.me && !C.sessionLost && C.modes.some(m => m.until && Date.parse(m.until) <= now) && now - (loadModes.at || 0) > 2000) { loadModes.at = now; loadModes(); }
  if (C.view !== "board") return;
  $$("#alarms .since").forEach(el => { el.textContent = fmtAgo(now - Number(el.dataset.since)); });
  $$("#alarms .esc[data-due]").forEach(el => { el.lastElementChild.textContent = fmtDur(Number(el.dataset.due) - now); });
}, 1000);

$("#alarms").addEventListener("click", async e => {
  const card = e.target.closest(".alarm"); if (!card) return;
  const id = card.dataset.id;
  try {
    if (e.target.classList.contains("ack")) {
      e.target.disabled = true;
      upsert(await api(`/api/alarms/${id}/ack`, {method: "POST", body: "{}"}));
    } else if (e.target.classList.contains("resolve")) {
      const reason = $(".reason", card).value;
      if (!reason) { $(".reason-error", card).textContent = t("reason_required"); $(".reason", card).focus(); return; }
      confirmResolve(C.alarms.get(Number(id)), reason, $(".note", card).value);
    }
  } catch (err) { e.target.disabled = false; toast(err.message, true); }
});
$("#alarms").addEventListener("change", e => {
  const card = e.target.closest(".alarm");
  if (card && e.target.classList.contains("reason")) $(".reason-error", card).textContent = "";
});
// One confirmation step: the dialog names the alarm and the reason chosen; cancel leaves it open.
function confirmResolve(a, reason, note) {
  if (!a) return;
  const d = $("#resolve-dialog"), label = C.reasons[reason] || {};
  $("#rd-alarm").textContent = `${t(a.severity)} · ${C.lang === "zh" ? a.message_zh : a.message_en}`;
  $("#rd-place").textContent = a.household ? a.household.address : (a.device_id || "");
  $("#rd-reason").textContent = label[C.lang] || label.zh || reason;
  $("#rd-note").textContent = note; $("#rd-note-row").hidden = !note;
  $("#rd-error").textContent = "";
  d.dataset.id = a.id; d.dataset.reason = reason; d.dataset.note = note;
  $("#rd-confirm").disabled = false;
  d.showModal();
  $("#rd-cancel").focus();   // the safe choice has the focus
}
$("#rd-cancel").onclick = () => $("#resolve-dialog").close("cancel");
$("#rd-confirm").onclick = async () => {
  const d = $("#resolve-dialog"), b = $("#rd-confirm");
  b.disabled = true;
  try {
    upsert(await api(`/api/alarms/${d.dataset.id}/resolve`, {method: "POST", body: JSON.stringify(
      {reason: d.dataset.reason, note: d.dataset.note})}));
    d.close("resolved");
    toast(t("resolved"));
  } catch (err) { b.disabled = false; $("#rd-error").textContent = err.message; }
};

// -- sound and notifications ----------------------------------------------------------------
function unackedCritical() { for (const a of C.alarms.values()) if (a.severity === "critical" && a.state === "raised" && !a.test) return true; return false; }
function updateSound() {
  const need = unackedCritical();
  AlarmSound.set(need);
  $("#sound-banner").hidden = !(need && !AlarmSound.ready() && !AlarmSound.muted());
  renotify(need);
}
function updateMute() { const b = $("#mute"); b.textContent = AlarmSound.muted() ? t("muted") : t("mute"); b.classList.toggle("muted", AlarmSound.muted()); }
$("#mute").onclick = () => { AlarmSound.toggleMute(); AlarmSound.unlock(); updateMute(); updateSound(); };
$("#sound-enable").onclick = () => AlarmSound.unlock().then(updateSound);
document.addEventListener("click", () => { if (!AlarmSound.ready()) AlarmSound.unlock().then(updateSound); });
$("#notify").onclick = async () => { if ("Notification" in window) await Notification.requestPermission(); $("#notify").hidden = Notification.permission !== "default"; };
function notify(a) {
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  const n = new Notification(t("notify_title"), {body: `${C.lang === "zh" ? a.message_zh : a.message_en}\n${a.household ? a.household.address : ""}`,
    tag: "alarm-" + a.id, requireInteraction: true, renotify: true});
  n.onclick = () => { window.focus(); show("board"); n.close(); };
}
let renotifyTimer = null;
function renotify(on) {  // repeat the notification every 60 s until acknowledged
  if (on && !renotifyTimer) renotifyTimer = setInterval(() => {
    for (const a of C.alarms.values()) if (a.severity === "critical" && a.state === "raised" && !a.test) notify(a);
  }, 60000);
  if (!on && renotifyTimer) { clearInterval(renotifyTimer); renotifyTimer = null; }
}

// -- live stream -----------------------------------------------------------------------------
$("#board-summary").addEventListener("click", e => { if (e.target.closest("#modes-pill")) show("devices"); });
async function loadBoard() {
  loadModes();
  // Alarms that arrive on the stream while the snapshot is in flight are newer than it:
  // the snapshot must not drop them (nor roll back their state).
  const live = C.liveDuringLoad = new Map();
  let data;
  try { data = await api("/api/alarms?state=open&limit=5000"); } finally { C.liveDuringLoad = null; }
  const ids = new Set(data.alarms.map(a => a.id));
  for (const [id, a] of C.alarms) if (!ids.has(id) && !live.has(id)) { a.state = "resolved"; pending.add(id); }
  data.alarms.forEach(a => { if (!live.has(a.id)) upsert(a); });
  queueFlush();
}
function connect() {
  if (C.source) C.source.close();
  const src = C.source = new EventSource("/api/stream");
  src.addEventListener("alarm", e => {
    const a = JSON.parse(e.data).alarm;
    if (C.liveDuringLoad) C.liveDuringLoad.set(a.id, a);
    upsert(a);
  });
  src.addEventListener("session", () => sessionLost());
  src.addEventListener("modes", e => setModes(JSON.parse(e.data)));
  src.onopen = () => { $("#conn").textContent = "● " + t("live"); $("#conn").className = "conn live"; $("#conn").dataset.state = "live"; loadBoard(); };
  src.onerror = () => {
    if (C.sessionLost) return;
    $("#conn").textContent = "○ " + t("offline"); $("#conn").className = "conn down"; $("#conn").dataset.state = "offline";
    if (src.readyState === EventSource.CLOSED) setTimeout(() => start(), 3000);
  };
}

// -- login and start -------------------------------------------------------------------------
async function start() {
  const running = !!C.me;   // the board is up: never drop it for the login page
  try { C.me = await api("/api/me"); } catch (e) {
    if (running) { if (e.status !== 401) setTimeout(start, 3000); return; }   // 401: re-login overlay
    $("#login").hidden = location.hash === "#setup"; $("#setup").hidden = location.hash !== "#setup";
    $("#app").hidden = true; $("#nav").hidden = true; return;
  }
  C.csrf = C.me.csrf;
  $("#who").textContent = `${C.me.user} · ${t("role_" + C.me.role)}`;
  $("#site-name").textContent = C.me.site.name;
  $("#logout").hidden = false; $("#mute").hidden = false; $("#nav").hidden = false;
  $("#notify").hidden = !("Notification" in window) || Notification.permission !== "default";
  $$("#nav [data-perm]").forEach(b => { b.hidden = !can(b.dataset.perm); });
  $("#login").hidden = true; $("#setup").hidden = true; $("#app").hidden = false;
  const rs = await api("/api/resolve-reasons");
  C.reasons = rs.reasons; C.reasonLabels = rs.labels || rs.reasons;
  applyLang();
  connect();  // the stream's open event loads the board (one snapshot, no gap)
}
$("#login").onsubmit = async e => {
  e.preventDefault(); const f = new FormData(e.target);
  AlarmSound.unlock();  // the login click is the user gesture that lets the alarm sound play
  try {
    await api("/api/login", {method: "POST", body: JSON.stringify({username: f.get("username"), password: f.get("password")})});
    $("#login-error").textContent = ""; e.target.reset(); start();
  } catch (err) { $("#login-error").textContent = loginError(err); }
};
// -- the session ended while the board is open ----------------------------------------------------
// The board keeps its cards, countdowns and sound; a re-login form over it asks for the
// password; logging in again resumes the live stream (which re-fetches the board).
function sessionLost() {
  if (C.sessionLost) return;
  C.sessionLost = true;
  if (C.source) { C.source.close(); C.source = null; }
  const rd = $("#resolve-dialog"); if (rd.open) rd.close("session");   // (a modal would make the form inert)
  $("#conn").textContent = "○ " + t("session_ended"); $("#conn").className = "conn down"; $("#conn").dataset.state = "session_ended";
  const f = $("#relogin");
  if (!f.elements.username.value && C.me) f.elements.username.value = C.me.user;
  $("#relogin-error").textContent = "";
  document.body.classList.add("session-lost");
  f.hidden = false;
  f.elements[f.elements.username.value ? "password" : "username"].focus();
}
function loginError(err) { return err.message; }   // the API's code in words (errorText)
$("#relogin").onsubmit = async e => {
  e.preventDefault(); const f = new FormData(e.target);
  AlarmSound.unlock();
  try {
    const r = await api("/api/login", {method: "POST", body: JSON.stringify({username: f.get("username"), password: f.get("password")})});
    C.csrf = r.csrf;
    e.target.elements.password.value = ""; $("#relogin-error").textContent = "";
    C.sessionLost = false; document.body.classList.remove("session-lost"); e.target.hidden = true;
    await start();   // who, reasons, the stream; the board stays as it is until the stream re-fetches it
  } catch (err) { $("#relogin-error").textContent = loginError(err); }
};
$("#to-setup").onclick = () => { $("#login").hidden = true; $("#setup").hidden = false; };
$("#setup").onsubmit = async e => {
  e.preventDefault(); const f = new FormData(e.target);
  try {
    await api("/api/setup", {method: "POST", body: JSON.stringify(Object.fromEntries(f))});
    location.hash = ""; $("#setup").hidden = true; $("#login").hidden = false;
  } catch (err) { $("#setup-error").textContent = err.message; }
};
$("#logout").onclick = async () => { try { await api("/api/logout", {method: "POST"}); } finally { location.reload(); } };
Object.assign(window, {$, $$, t, esc, api, can, toast, fmtTime, fmtDur, fmtAgo, show, modeTag, setModes,
  known, errorText, fieldText, kindLabel, readingValue, qualityLabel});
applyLang(); start();
