"use strict";
// The duty console: login, navigation, the live alarm board (SSE), sound and notifications.
// Other pages (history, devices, installer, admin) are in pages.js. No build step.
const C = window.C = {
  lang: localStorage.getItem("lang") || "zh", csrf: null, me: null,
  alarms: new Map(), cards: new Map(), source: null, reasons: {}, view: "board",
  modes: [],   // devices in test/maintenance mode now (/api/devices/modes, event: modes)
  care: new Map(), careCounts: {},   // household care states (/api/care)
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
    throw Object.assign(new Error(msg), {status: r.status, detail: d, code: body.code, body});
  }
  return body;
}
function toast(msg, bad) {
  const el = $("#toast"); el.textContent = msg; el.hidden = false; el.classList.toggle("bad", !!bad);
  clearTimeout(toast.timer); toast.timer = setTimeout(() => { el.hidden = true; }, 4000);
}
// a date-time: zh-CN as the locale writes it (2026/12/6 22:36:28); English as 2026-12-06 22:36:28,
// never 06/12/2026 (read as day/month or month/day depending on the reader)
function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (C.lang === "zh") return d.toLocaleString("zh-CN");
  const two = n => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}
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
  if (actor === "rule" || actor.startsWith("rule:")) return t("actor_rule");   // linkage's audit: "rule"
  if (actor === "cli" || actor === "setup") return t("actor_" + actor);
  if (actor.startsWith("token:")) return t("actor_token", {name: actor.slice(6)});
  return actor;
}
// who did it as HTML: names of people (users, a case handler, a token's name) marked as data
function actorHtml(actor) {
  const label = actorLabel(actor);
  if (label === actor) return `<span data-raw>${esc(actor)}</span>`;
  const name = actor.startsWith("token:") ? actor.slice(6) : actor.startsWith("case_system:") ? actor.slice(12) : "";
  return name && label.includes(name) ? label.split(name).map(esc).join(`<span data-raw>${esc(name)}</span>`) : esc(label);
}
// a message made by a rule, as HTML: the site's names in it (an address, a device's or a grid
// cell's name: {household_address}, {device_name}, ...) marked as data; the rest is the rule's
function rawNames(msg, names) {
  const list = [...new Set(names.filter(n => n && n.length > 1))].sort((x, y) => y.length - x.length);
  let parts = [String(msg ?? "")];
  for (const n of list) parts = parts.flatMap((p, i) => typeof p !== "string" ? [p] : p.split(n).flatMap((q, j) => j ? [{raw: n}, q] : [q]));
  return parts.map(p => typeof p === "string" ? esc(p) : `<span data-raw>${esc(p.raw)}</span>`).join("");
}
function caseStatusLabel(s) { return s ? t("cs_" + s) : ""; }
// a device type in words (a type the console does not know stays as it is)
function typeLabel(x) { return x && I18N.zh["type_" + x] ? t("type_" + x) : (x || ""); }

// -- i18n and navigation ------------------------------------------------------------------
function applyLang() {
  document.documentElement.lang = C.lang === "zh" ? "zh-CN" : "en";
  $$("[data-i18n]").forEach(e => { e.textContent = t(e.dataset.i18n); });
  $$("[data-i18n-placeholder]").forEach(e => { e.placeholder = t(e.dataset.i18nPlaceholder); });
  sayLoginErrorAgain($("#login-error")); sayLoginErrorAgain($("#relogin-error"));
  document.title = t("title");
  $("#lang").value = C.lang;
  updateMute();
  const conn = $("#conn");   // the header's live-stream state and the user, in the new language
  if (conn && conn.dataset.state) conn.textContent = (conn.dataset.state === "live" ? "● " : "○ ") + t(conn.dataset.state);
  if (C.me) $("#who").innerHTML = `<span data-raw>${esc(C.me.user)}</span> · ${esc(t("role_" + C.me.role))}`;
  if (C.me) { redrawBoard(true); if (window.Pages) Pages.show(C.view); }
}
$("#lang").onchange = e => {
  C.lang = e.target.value; localStorage.setItem("lang", C.lang);
  // a toast is a sentence in the language it was made in: close it rather than leave it behind
  const tt = $("#toast"); tt.hidden = true; clearTimeout(toast.timer);
  applyLang();
};
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
// An escalated card says so (已升级至<tier>) whatever its state since; while it is raised and
// not taken by the grid, the countdown to the next tier follows.
function escalation(a, now) {
  const e = C.me && C.me.escalation;
  const done = a.escalation_tier > 0 ? `<span class="esc done escalated">${esc(t("escalated", {tier: tierName(a.escalation_tier_name || (e && e.tiers[a.escalation_tier - 1] || {}).name || "")}))}</span>` : "";
  if (!e || a.state !== "raised" || SEV[a.severity] > SEV[e.min_severity]) return done;
  // two phrases, two sentences: "已升级至网格员；网格已接单，不再升级"
  const sep = done ? (C.lang === "zh" ? "；" : "; ") : "";
  if (a.escalation_stopped) return `${done}${sep}<span class="esc done">${esc(t("escalation_stopped"))}</span>`;
  const next = e.tiers[a.escalation_tier || 0];
  if (!next) return done;
  const due = Date.parse(a.raised_at) + next.after_s * 1000;
  return `${done}${sep}<span class="esc" data-due="${due}" data-tier="${esc(next.name)}">${esc(t("escalate_in", {tier: tierName(next.name)}))} <b>${fmtDur(due - now)}</b></span>`;
}
function householdCard(a) {
  const h = a.household, g = a.grid;
  // names over ids (site data, marked data-raw: the untranslated-text test skips them)
  const place = h ? `<b data-raw>${esc(h.address)}</b>${h.lives_alone ? ` <span class="tag">${t("lives_alone")}</span>` : ""}` : `<span data-raw>${esc(a.device_name || a.device_id || "")}</span>`;
  const grid = g ? `${t("grid")} <span data-raw>${esc(g.name)} (${esc(g.code)})</span>${g.grid_member ? ` · ${t("member")} <span data-raw>${esc(g.grid_member)}</span>` : ""}` : `<span data-raw>${esc(a.grid_cell || "")}</span>`;
  const contacts = h && h.contacts.length ? `<div class="contacts">${t("contacts")}${t("colon")}${h.contacts.map(c =>
    `<span data-raw>${esc(c.name)}${c.relation ? "（" + esc(c.relation) + "）" : ""}</span> ${/\*/.test(c.phone) ? esc(c.phone) : `<a href="tel:${esc(c.phone)}">${esc(c.phone)}</a>`}`).join(C.lang === "zh" ? "，" : ", ")}</div>` : "";
  const care = a.household_id ? careTag(a.household_id) + (can("alarms.act") ? ` <button type="button" class="care-btn link" data-household="${esc(a.household_id)}">${t("care_set_btn")}</button>` : "") : "";
  return `<div class="household"><div>${place}${modeTags(a)}${care}</div><div class="meta">${grid}</div>${contacts}</div>`;
}
// -- household care states (外出 / 住院 / 有人陪护): GET /api/care, set and ended on the card
function careTag(hid) {
  const c = C.care.get(hid); if (!c) return "";
  // once the expected end has passed, the tag says so (外出 · 已过预计返回时间 22:42)
  const past = c.expected_end && Date.parse(c.expected_end) <= Date.now();
  const key = c.state === "carer" ? (past ? "care_until_past" : "care_until") : (past ? "care_back_past" : "care_back_by");
  const until = c.expected_end ? " · " + esc(t(key, {time: fmtUntil(c.expected_end)})) : "";
  return ` <span class="tag care${past ? " overdue" : ""}" data-care="${esc(c.state)}"${c.expected_end ? ` data-end="${Date.parse(c.expected_end)}"` : ""}>${esc(t("care_" + c.state))}${until}</span>`;
}
function setCare(d) {
  const before = JSON.stringify([...C.care.values()]);
  C.care = new Map(((d && d.care) || []).map(r => [r.household_id, r]));
  C.careCounts = (d && d.counts) || {};
  if (JSON.stringify([...C.care.values()]) !== before) { redrawBoard(true); document.dispatchEvent(new Event("care-changed")); }
}
function loadCare() { return api("/api/care").then(setCare).catch(() => {}); }
setInterval(() => { if (C.me && !C.sessionLost && can("households.read")) loadCare(); }, 60000);
function openCare(hid, address) {   // from an alarm's card, or the households page (its address)
  const d = $("#care-dialog"), c = C.care.get(hid);
  const a = [...C.alarms.values()].find(x => x.household_id === hid);
  $("#cd-place").textContent = address || (a && a.household ? a.household.address : "") || (c && c.address) || hid;
  $("#cd-state").value = c ? c.state : "away";
  const end = c && c.expected_end ? new Date(c.expected_end) : null;
  $("#cd-end").value = end ? new Date(end.getTime() - end.getTimezoneOffset() * 60000).toISOString().slice(0, 16) : "";
  $("#cd-note").value = c ? c.note : "";
  $("#cd-current").textContent = c ? t("care_now", {state: t("care_" + c.state)}) : t("care_none");
  $("#cd-end-now").hidden = !c;
  $("#cd-error").textContent = "";
  d.dataset.household = hid;
  d.showModal();
}
$("#alarms").addEventListener("click", e => { const b = e.target.closest(".care-btn"); if (b) openCare(b.dataset.household); });
$("#cd-cancel").onclick = () => $("#care-dialog").close("cancel");
async function careRequest(method, body) {
  const d = $("#care-dialog");
  try {
    await api(`/api/households/${encodeURIComponent(d.dataset.household)}/care`, {method, ...(body ? {body: JSON.stringify(body)} : {})});
    d.close("saved");
    toast(t(method === "DELETE" ? "care_ended" : "care_saved"));
    await loadCare();
  } catch (err) { $("#cd-error").textContent = err.message; }
}
$("#cd-save").onclick = () => {
  const end = $("#cd-end").value;
  careRequest("PUT", {state: $("#cd-state").value, note: $("#cd-note").value,
    ...(end ? {expected_end: new Date(end).toISOString()} : {})});
};
$("#cd-end-now").onclick = () => careRequest("DELETE");
// -- devices in test or maintenance mode: their triggers are tests, not alarms, until the mode ends
function fmtUntil(iso) {
  const d = new Date(iso), loc = C.lang === "zh" ? "zh-CN" : "en-GB";
  const time = d.toLocaleTimeString(loc, {hour: "2-digit", minute: "2-digit"});
  return d.toDateString() === new Date().toDateString() ? time : `${d.toLocaleDateString(loc, C.lang === "zh" ? {month: "numeric", day: "numeric"} : {month: "short", day: "numeric"})} ${time}`;
}
function modeTag(m, withName) {
  const what = esc(t("mode_on_" + m.mode)) + (withName ? `${C.lang === "zh" ? "：" : ": "}<span data-raw>${esc(m.name || m.device_id)}</span>` : "");
  return `<span class="tag test mode-tag" data-device="${esc(m.device_id)}" data-mode="${esc(m.mode)}">${what}${m.until ? " · " + esc(t("mode_until", {time: fmtUntil(m.until)})) : ""}</span>`;
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
  const status = a.case_id ? `${t("case")} <span data-raw>${esc(a.case_id)}</span> · ${esc(a.case_status ? t(closedOpen ? "case_closed_confirm" : "cs_" + a.case_status) : "")}` : t("case_none");
  // a refused case in words (工单被拒：…), never the raw reply: docs/case-system.md section 9
  const refused = a.case_refusal ? (a.case_refusal[C.lang] || a.case_refusal.zh) : "";
  if (refused && !a.case_id) return `<span class="error case-refused">${esc(refused)}</span>`;
  return `<span class="case">${status}</span>${refused ? ` <span class="error case-refused">${esc(refused)}</span>` : ""}`;
}
function cardHtml(a, now) {
  const msg = C.lang === "zh" ? a.message_zh : a.message_en;
  return `<div class="line1"><span class="sev ${esc(a.severity)}">${t(a.severity)}</span>
      ${a.test ? `<span class="tag test">${t("test_badge")}</span>` : ""}
      <span class="title">${rawNames(msg, [a.household && a.household.address, a.device_name, a.grid && a.grid.name])}</span>${a.count > 1 ? `<span class="count">${a.count}${t("count")}</span>` : ""}
      <span class="state ${esc(a.state)}">${t(a.state)}</span></div>
    ${householdCard(a)}
    <div class="meta"><span class="since" data-since="${Date.parse(a.raised_at)}">${fmtAgo(now - Date.parse(a.raised_at))}</span>
      · ${t("raised_at")} ${esc(fmtTime(a.raised_at))}${a.device_name || a.device_id ? ` · <span class="device" data-raw title="${esc(a.device_id || "")}">${esc(a.device_name || a.device_id)}</span>` : ""}${(e => e ? " · " + e : "")(escalation(a, now))} · ${caseLine(a)}
      ${a.ack_by ? ` · ${t("acknowledged")}${t("colon")}${actorHtml(a.ack_by)}` : ""}</div>
    ${window.Linkage ? Linkage.html(a) : ""}`;
}
// -- the response: what to do (guidance) and whom to call in order (the call plan) -------------
// Drawn apart from the card's body and kept while it stays the same (a live update never
// takes a half-made tap away); each call: tap-to-call link, the outcomes so far, one tap each.
const OUTCOMES = ["connected", "no_answer", "on_site", "notified"];
function callRole(c) { return c.kind === "resident" ? t("call_resident") : c.kind === "grid_member" ? t("member") : c.relation || ""; }
function responseKey(a) {
  const r = a.response; if (!r) return "";
  return JSON.stringify([C.lang, a.state, can("alarms.act"), r.call_plan.map(c => [c.key, c.phone, c.outcomes.length]), !!r.guidance]);
}
function responseHtml(a) {
  const r = a.response; if (!r) return "";
  const g = r.guidance && (r.guidance[C.lang] || r.guidance.zh);
  const act = can("alarms.act") && a.state !== "resolved";
  const guidance = g && g.length ? `<div class="guidance"><h4>${t("guidance")}</h4><ol>${g.map(s => `<li data-raw>${esc(s)}</li>`).join("")}</ol></div>` : "";
  const plan = r.call_plan.length ? `<div class="call-plan"><h4>${t("call_plan")}</h4><ol>${r.call_plan.map(c => {
    const last = c.outcomes[c.outcomes.length - 1];
    const role = callRole(c);
    const phone = !c.phone ? `<span class="no-phone">${t("no_phone")}</span>` : /\*/.test(c.phone) ? `<span class="phone masked" data-raw>${esc(c.phone)}</span>`
      : `<a class="tel" data-raw href="tel:${esc(c.phone.replace(/[ -]/g, ""))}">${esc(c.phone)}</a>`;
    const done = last ? `<span class="outcome-tag ${esc(last.outcome)}" title="${esc(actorLabel(last.by) + " · " + fmtTime(last.at))}">${t("outcome_" + last.outcome)}${c.outcomes.length > 1 ? ` ×${c.outcomes.length}` : ""}</span>` : "";
    const buttons = act ? `<span class="outcomes">${OUTCOMES.map(o => `<button type="button" class="outcome" data-outcome="${o}">${t("outcome_" + o)}</button>`).join("")}</span>` : "";
    // names, relations, phones and the site's own guidance are site data (data-raw)
    const roleHtml = !role ? "" : c.kind === "contact" ? `<small data-raw>（${esc(role)}）</small>` : `<small>${esc(C.lang === "zh" ? `（${role}）` : ` (${role})`)}</small>`;
    return `<li class="call" data-key="${esc(c.key)}"><span class="who"><span data-raw>${esc(c.name)}</span>${roleHtml}</span> ${phone} ${done}${buttons}</li>`;
  }).join("")}</ol></div>` : "";
  return guidance + plan;
}
// The card's controls are drawn apart from the rest and kept while they stay the same, so
// that a live update (case status, escalation) never takes the focus, the typed note or a
// hint away from staff who are working on the card.
function actionsKey(a) { return can("alarms.act") ? [a.state, needsAck(a), C.lang, can("commands.send") && a.commandable].join("|") : ""; }
function actionsHtml(a) {
  if (!can("alarms.act")) return "";
  return `${a.state === "raised" ? `<button class="primary ack">${t("ack")}</button>` : ""}
      ${needsAck(a) ? `<span class="hint needs-ack">${t("resolve_needs_ack")}</span>` : `
      <select class="reason" aria-label="${t("reason")}"><option value="" selected>${t("choose_reason")}</option>${Object.entries(C.reasons).map(([k, v]) => `<option value="${k}">${esc(v[C.lang] || v.zh)}</option>`).join("")}</select>
      <input class="note" placeholder="${t("note")}" maxlength="1000" aria-label="${t("note")}">
      <button class="resolve">${t("resolve")}</button><span class="error reason-error" role="alert"></span>`}
      ${window.Linkage ? Linkage.button(a) : ""}`;
}
// A critical alarm is acknowledged before it can be resolved (the API refuses it too).
function needsAck(a) { return a.severity === "critical" && a.state === "raised"; }
const pending = new Set();
let flushQueued = false;
function upsert(a) {
  const old = C.alarms.get(a.id);
  if (old && old.updated_at > a.updated_at && old.state === "resolved") return;
  const calls = x => x.response ? x.response.call_plan.map(c => c.outcomes.length).join(",") : "";
  const sig = x => [x.updated_at, x.state, x.count, x.escalation_tier, x.case_id, x.case_status, x.case_error, calls(x), window.Linkage ? Linkage.sig(x) : ""].join("|");
  if (old && sig(old) === sig(a) && C.cards.has(a.id)) return;  // unchanged: no redraw
  C.alarms.set(a.id, a);
  if (a.severity === "critical" && a.state === "raised" && !a.test && (!old || old.state !== "raised")) notify(a);
  // a card the case system resolved (its case closed) does not vanish without a word
  if (old && old.state !== "resolved" && a.state === "resolved" && (a.resolved_by || "").startsWith("case_system"))
    toast(t("closed_by_case", {what: catLabel(a.category)}));
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
// The board's order (docs/api.md "The board"): not yet acknowledged first; then the site's
// priority of the alarm's category (site.yaml response.<category>.priority: fire, gas and
// inactivity above a stream of emergency-call presses); then severity; then the one waiting
// longest first.
const prio = a => (a.response && a.response.priority) || 5;
function order(a, b) {
  return ((a.state === "raised" ? 0 : 1) - (b.state === "raised" ? 0 : 1)) || (prio(a) - prio(b))
    || (SEV[a.severity] - SEV[b.severity]) || (Date.parse(a.raised_at) - Date.parse(b.raised_at)) || (a.id - b.id);
}
// -- the board's filters: by category and grid cell, from what is on the board ----------------
C.filter = {category: "", cell: ""};
function shown(a) { return (!C.filter.category || a.category === C.filter.category) && (!C.filter.cell || (a.grid_cell || "") === C.filter.cell); }
function catLabel(c) { return I18N.zh["cat_" + c] ? t("cat_" + c) : c; }
function filtersHtml(list) {
  const count = (f) => { const m = new Map(); for (const a of list) { const k = f(a); if (k) m.set(k, (m.get(k) || 0) + 1); } return m; };
  const cats = count(a => a.category), cells = count(a => a.grid_cell), names = new Map(list.filter(a => a.grid).map(a => [a.grid_cell, a.grid.name]));
  if (C.filter.category && !cats.has(C.filter.category)) cats.set(C.filter.category, 0);
  if (C.filter.cell && !cells.has(C.filter.cell)) cells.set(C.filter.cell, 0);
  const opt = (v, label, n, sel, raw) => `<option value="${esc(v)}"${sel === v ? " selected" : ""}${raw ? " data-raw" : ""}>${esc(label)} (${n})</option>`;
  return `<select id="f-category" aria-label="${t("f_category")}"><option value="">${t("any_category")}</option>${[...cats].sort().map(([c, n]) => opt(c, catLabel(c), n, C.filter.category)).join("")}</select>
    <select id="f-cell" aria-label="${t("grid")}"><option value="">${t("any_cell")}</option>${[...cells].sort().map(([c, n]) => opt(c, names.get(c) || c, n, C.filter.cell, true)).join("")}</select>`;
}
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
    let resp = el.querySelector(".response");
    const rkey = responseKey(a);
    if (!resp || resp.dataset.key !== rkey) {
      if (!resp) { resp = document.createElement("div"); resp.className = "response"; body.after(resp); }
      resp.dataset.key = rkey; resp.innerHTML = responseHtml(a);
    }
    el.dataset.category = a.category; el.dataset.cell = a.grid_cell || "";
    el.hidden = !shown(a);
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
  for (const a of sorted) C.cards.get(a.id).hidden = !shown(a);
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
function careSummary() {   // the board header: households away, in hospital, with a carer
  const n = C.careCounts || {};
  return ["away", "hospital", "carer"].filter(s => n[s]).map(s =>
    ` <button type="button" class="pill care" data-care="${s}" id="n-care-${s}" data-raw-title title="${esc([...C.care.values()].filter(c => c.state === s).map(c => c.address || c.household_id).join("\n"))}">${t("care_" + s)} <b>${n[s]}</b></button>`).join("");
}
function summary(list) {
  const crit = list.filter(a => a.severity === "critical" && a.state === "raised").length;
  $("#alarms").classList.toggle("calm", crit > 12);
  const filtered = C.filter.category || C.filter.cell, visible = list.filter(shown).length;
  $("#board-summary").innerHTML = `<span class="pill ${crit ? "critical" : ""}">${t("open_critical")}${t("colon")}<b id="n-critical">${crit}</b></span>
    <span class="pill">${t("open_total")}${t("colon")}<b id="n-open">${list.length}</b></span>${filtered ? `
    <span class="pill filtered" id="n-shown">${t("shown_of", {n: visible, total: list.length})}</span>` : ""}${C.modes.length ? `
    <button type="button" class="pill modes" id="modes-pill" data-raw-title title="${esc(C.modes.map(m => `${m.name || m.device_id} · ${t("mode_on_" + m.mode)}${m.until ? " · " + t("mode_until", {time: fmtUntil(m.until)}) : ""}`).join("\n"))}">${t("modes_count")} <b id="n-modes">${C.modes.length}</b></button>` : ""}${careSummary()}`;
  const filters = $("#board-filters");
  if (!filters.contains(document.activeElement)) filters.innerHTML = filtersHtml(list);
  document.title = (crit ? `(${crit}) ` : "") + t("title");
}
$("#board-filters").addEventListener("change", e => {
  if (e.target.id === "f-category") C.filter.category = e.target.value;
  else if (e.target.id === "f-cell") C.filter.cell = e.target.value;
  else return;
  e.target.blur();
  redrawBoard(false);
});
function redrawBoard(all) {
  if (all) { for (const id of C.alarms.keys()) pending.add(id); }
  flush();
}
// the header's height, for the board's bar that sticks under it (the header wraps on a phone)
new ResizeObserver(() => { document.documentElement.style.setProperty("--head-h", $("#top").offsetHeight + "px"); }).observe($("#top"));
// a desktop header whose title, tabs and tools do not fit one row (English, the admin's ten
// tabs): the tabs get a row of their own under the title and tools ("tiered"), rather than
// wrapping into two or three rows between them. Measured from the items' own widths, which do
// not depend on the layout chosen, so the choice is stable. A phone (up to 760 px) keeps its layout.
function fitHeader() {
  const top = $("#top"), w = el => el && !el.hidden ? el.getBoundingClientRect().width : 0;
  const row = (items, gap) => { const v = items.filter(x => !x.hidden && x.getClientRects().length); return v.reduce((n, x) => n + w(x), 0) + gap * Math.max(0, v.length - 1); };
  const nav = $("#nav").hidden ? 0 : row($$("#nav .tab"), 4), tools = row([...$("#top .tools").children], 10);
  const cs = getComputedStyle(top), inner = top.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
  const need = w($("#top h1")) + nav + tools + 16 * 2 + 1;
  top.classList.toggle("tiered", window.innerWidth > 760 && nav > 0 && need > inner);
}
{ const ro = new ResizeObserver(() => fitHeader()); ["#top", "#nav", "#top h1", "#top .tools"].forEach(s => ro.observe($(s))); }
// one timer for every "time since" and countdown on the board
setInterval(() => {
  const now = Date.now();
  // a mode's end has come by this browser's clock: ask the gateway (its clock decides; its
  // "modes" event follows the end too)
  if (C.me && !C.sessionLost && C.modes.some(m => m.until && Date.parse(m.until) <= now) && now - (loadModes.at || 0) > 2000) { loadModes.at = now; loadModes(); }
  if (C.view !== "board") return;
  $$("#alarms .since").forEach(el => { el.textContent = fmtAgo(now - Number(el.dataset.since)); });
  $$("#alarms .esc[data-due]").forEach(el => { el.lastElementChild.textContent = fmtDur(Number(el.dataset.due) - now); });
  // a care state's expected end came while the board was open: its tag says it has passed
  if ($$("#alarms .tag.care[data-end]:not(.overdue)").some(el => Number(el.dataset.end) <= now)) redrawBoard(true);
}, 1000);

$("#alarms").addEventListener("click", async e => {
  const card = e.target.closest(".alarm"); if (!card) return;
  const id = card.dataset.id;
  try {
    if (e.target.classList.contains("ack")) {
      e.target.disabled = true;
      upsert(await api(`/api/alarms/${id}/ack`, {method: "POST", body: "{}"}));
    } else if (e.target.classList.contains("outcome")) {
      const li = e.target.closest(".call");
      $$("button.outcome", li).forEach(b => { b.disabled = true; });
      const rid = "tap-" + Date.now().toString(36) + "-" + Math.random().toString(36).slice(2, 10);
      upsert(await api(`/api/alarms/${id}/calls`, {method: "POST", body: JSON.stringify(
        {contact: li.dataset.key, outcome: e.target.dataset.outcome, request_id: rid})}));
      toast(t("call_recorded", {who: $(".who", li).textContent, outcome: t("outcome_" + e.target.dataset.outcome)}));
    } else if (e.target.classList.contains("resolve")) {
      const reason = $(".reason", card).value;
      if (!reason) { $(".reason-error", card).textContent = t("reason_required"); $(".reason", card).focus(); return; }
      confirmResolve(C.alarms.get(Number(id)), reason, $(".note", card).value);
    }
  } catch (err) {
    e.target.disabled = false;
    const li = e.target.closest(".call"); if (li) $$("button.outcome", li).forEach(b => { b.disabled = false; });
    toast(err.message, true);
  }
});
$("#alarms").addEventListener("change", e => {
  const card = e.target.closest(".alarm");
  if (card && e.target.classList.contains("reason")) $(".reason-error", card).textContent = "";
});
// One confirmation step: the dialog names the alarm and the reason chosen; cancel leaves it open.
function confirmResolve(a, reason, note) {
  if (!a) return;
  const d = $("#resolve-dialog"), label = C.reasons[reason] || {};
  $("#rd-alarm").innerHTML = `${esc(t(a.severity))} · ${rawNames(C.lang === "zh" ? a.message_zh : a.message_en, [a.household && a.household.address, a.device_name, a.grid && a.grid.name])}`;
  $("#rd-place").textContent = a.household ? a.household.address : (a.device_name || a.device_id || "");
  $("#rd-place").dataset.raw = "";   // an address or a device's name: site data
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
  if (can("households.read")) loadCare();
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
  $("#who").innerHTML = `<span data-raw>${esc(C.me.user)}</span> · ${esc(t("role_" + C.me.role))}`;
  $("#site-name").textContent = C.me.site.name; $("#site-name").dataset.raw = "";   // site data
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
  } catch (err) { showLoginError($("#login-error"), err); }
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
// a login form's error, kept to be said again in the language chosen next (applyLang)
function showLoginError(el, err) { el.textContent = loginError(err); el.loginErr = err; }
function sayLoginErrorAgain(el) {
  const err = el && el.loginErr;
  if (!err || !el.textContent) return;
  el.textContent = err.body ? errorText(err.body, err.status) : t("err_network");
}
$("#relogin").onsubmit = async e => {
  e.preventDefault(); const f = new FormData(e.target);
  AlarmSound.unlock();
  try {
    const r = await api("/api/login", {method: "POST", body: JSON.stringify({username: f.get("username"), password: f.get("password")})});
    C.csrf = r.csrf;
    e.target.elements.password.value = ""; $("#relogin-error").textContent = "";
    C.sessionLost = false; document.body.classList.remove("session-lost"); e.target.hidden = true;
    await start();   // who, reasons, the stream; the board stays as it is until the stream re-fetches it
  } catch (err) { showLoginError($("#relogin-error"), err); }
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
  known, errorText, fieldText, kindLabel, readingValue, qualityLabel, actorHtml, rawNames});
applyLang(); start();
