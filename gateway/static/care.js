"use strict";
// Care pages: help requests (求助 / 生活服务: GET/POST /api/help-requests, assign, done,
// feedback), visits (探访: POST /api/visits, the month's coverage per grid cell, its CSV) and
// today's check-ins (报平安: GET /api/checkins; a missed one links to its follow-up alarm).
// Their tabs and sections are added here, so console.html and pages.js stay as they are.
window.Care = (function () {
  let households = null, categories = [], timer = null, ciTimer = null;
  const sep = () => C.lang === "zh" ? "：" : ": ";

  // -- the tabs and the two sections ------------------------------------------------------
  function tab(view, perm, key) {
    const b = document.createElement("button");
    Object.assign(b.dataset, {view, perm, i18n: key});
    b.className = "tab"; b.hidden = true; b.textContent = t(key);
    const admin = $('#nav [data-view="admin"]');
    $("#nav").insertBefore(b, admin);
  }
  tab("help", "help.read", "nav_help");
  tab("visits", "visits.read", "nav_visits");
  tab("checkins", "households.read", "nav_checkins");
  $("#app").insertAdjacentHTML("beforeend", `
  <section id="view-help" class="view" hidden>
    <div class="cols">
      <div class="col">
        <h3 data-i18n="help_title"></h3>
        <div class="filters"><select id="help-state">
          <option value="open" data-i18n="help_open"></option><option value="" data-i18n="help_any_state"></option>
          <option value="received" data-i18n="hs_received"></option><option value="assigned" data-i18n="hs_assigned"></option>
          <option value="done" data-i18n="hs_done"></option><option value="closed" data-i18n="hs_closed"></option></select></div>
        <div id="help-list" class="table-wrap"></div>
      </div>
      <div class="col" data-perm-box="help.act">
        <h3 data-i18n="help_new"></h3>
        <p class="hint" id="help-no-categories" data-i18n="help_no_categories" hidden></p>
        <form id="help-form" class="form" novalidate>
          <label><span data-i18n="f_category"></span><select name="category" id="help-category" required></select></label>
          <label><span data-i18n="f_household"></span><select name="household_id" class="care-households" required></select></label>
          <label><span data-i18n="f_channel"></span><select name="channel"><option value="phone" data-i18n="channel_phone"></option><option value="console" data-i18n="channel_console"></option></select></label>
          <label><span data-i18n="f_note"></span><input name="note" maxlength="500"></label>
          <p class="error" id="help-error" role="alert"></p>
          <button type="submit" class="primary" data-i18n="save"></button>
        </form>
      </div>
    </div>
  </section>
  <section id="view-visits" class="view" hidden>
    <div class="cols">
      <div class="col">
        <h3 data-i18n="cov_title"></h3>
        <div class="filters"><label><span data-i18n="cov_month"></span><input type="month" id="visit-month"></label>
          <a id="visits-csv" class="button" href="/api/visits.csv" download data-i18n="export_csv"></a></div>
        <div id="visit-remind"></div>
        <div id="coverage"></div>
      </div>
      <div class="col" data-perm-box="visits.write">
        <h3 data-i18n="visit_record"></h3>
        <form id="visit-form" class="form" novalidate>
          <label><span data-i18n="f_household"></span><select name="household_id" class="care-households" required></select></label>
          <label><span data-i18n="f_visitor"></span><input name="visitor" maxlength="50"></label>
          <label><span data-i18n="f_visited_at"></span><input name="visited_at" type="datetime-local"><em class="hint" data-i18n="visit_now"></em></label>
          <label><span data-i18n="f_note"></span><input name="note" maxlength="500"></label>
          <p class="error" id="visit-error" role="alert"></p>
          <button type="submit" class="primary" data-i18n="save"></button>
        </form>
      </div>
    </div>
  </section>
  <section id="view-checkins" class="view" hidden>
    <h3 data-i18n="ci_title"></h3>
    <p class="hint" id="checkin-date"></p>
    <div id="checkin-list" class="table-wrap"></div>
  </section>`);
  $$("#view-help [data-i18n], #view-visits [data-i18n], #view-checkins [data-i18n]").forEach(e => { e.textContent = t(e.dataset.i18n); });

  function permBoxes() { $$("[data-perm-box]").forEach(b => { b.hidden = !can(b.dataset.permBox); }); }
  function requestId() { return (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random().toString(36).slice(2)).replace(/[^A-Za-z0-9_-]/g, ""); }
  async function loadHouseholds() {
    if (!households) households = (await api("/api/households")).households;
    $$(".care-households").forEach(sel => {
      const keep = sel.value;
      // no household chosen for staff: a placeholder first, the field's error if left on it
      sel.innerHTML = `<option value="">${esc(t("choose_household"))}</option>` + households.map(h => `<option value="${esc(h.id)}" title="${esc(h.id)}" data-raw>${esc(h.address)}</option>`).join("");
      if (keep) sel.value = keep;
    });
  }
  // the form's household left on the placeholder: its field error (住户：必填), no request
  function householdMissing(f, errorEl) {
    const sel = f.household_id, missing = !sel.value;
    sel.setAttribute("aria-invalid", String(missing));
    if (missing) { errorEl.textContent = t("f_household") + sep() + t("v_missing"); sel.focus(); }
    return missing;
  }
  function catName(r) { return r.category_name ? (r.category_name[C.lang] || r.category_name.zh) : r.category; }
  function raw(s) { return s ? `<span data-raw>${esc(s)}</span>` : ""; }

  // -- help requests -----------------------------------------------------------------------
  function actions(r) {
    if (!can("help.act")) return "";
    if (r.state === "received" || r.state === "assigned")
      return `<input class="assign-to" maxlength="50" size="8" aria-label="${esc(t("f_to"))}" placeholder="${esc(t("f_to"))}">
        <button class="assign">${esc(t("help_assign"))}</button> <button class="done primary">${esc(t("help_done"))}</button>`;
    if (r.state === "done")
      return `<select class="rating" aria-label="${esc(t("f_rating"))}">${["satisfied", "neutral", "unsatisfied"].map(f => `<option value="${f}">${esc(t("fb_" + f))}</option>`).join("")}</select>
        <button class="feedback">${esc(t("help_feedback"))}</button>`;
    return r.feedback ? esc(t("fb_" + r.feedback)) : "";
  }
  function caseCell(r) {
    if (r.case_id) return `${raw(r.case_id)}${r.case_status ? " · " + esc(t("cs_" + r.case_status)) : ""}`;
    return r.case_error ? `<span class="error">${esc(t("err_generic", {code: r.case_error}))}</span>` : `<span class="hint">${esc(t("help_no_case"))}</span>`;
  }
  function helpRow(r) {
    return `<tr class="help-row" data-help="${r.id}" data-state="${esc(r.state)}">
      <td>${esc(fmtTime(r.created_at))}</td><td><b>${esc(catName(r))}</b>${r.note ? `<div class="hint">${raw(r.note)}</div>` : ""}</td>
      <td>${raw(r.address)}<div class="hint">${raw(r.grid_cell_name)}</div></td>
      <td>${esc(t("channel_" + r.channel))}</td><td class="help-state">${esc(t("hs_" + r.state))}</td>
      <td>${raw(r.assigned_to)}</td><td class="help-case">${caseCell(r)}</td><td class="actions">${actions(r)}</td></tr>`;
  }
  async function help() {
    permBoxes();
    const state = $("#help-state").value;
    const [data] = await Promise.all([api("/api/help-requests" + (state ? "?state=" + state : "")), can("help.act") ? loadHouseholds() : null]);
    categories = data.categories;
    const sel = $("#help-category"), keep = sel.value;
    sel.innerHTML = categories.map(c => `<option value="${esc(c.id)}">${esc(c[C.lang] || c.zh)}</option>`).join("");
    if (keep) sel.value = keep;
    // a site without help_categories: no form that can only fail, a line that says why
    $("#help-form").hidden = !categories.length; $("#help-no-categories").hidden = !!categories.length;
    const list = data.requests;
    $("#help-list").innerHTML = list.length ? `<table class="grid help"><thead><tr><th>${esc(t("help_created"))}</th><th>${esc(t("f_category"))}</th><th>${esc(t("help_place"))}</th><th>${esc(t("help_channel"))}</th><th>${esc(t("state"))}</th><th>${esc(t("help_who"))}</th><th>${esc(t("case"))}</th><th></th></tr></thead>
      <tbody>${list.map(helpRow).join("")}</tbody></table>` : `<p class="hint">${esc(t("help_none"))}</p>`;
    clearInterval(timer);   // case statuses come back by themselves: look again while the page is open
    timer = setInterval(() => { if (C.view === "help" && !$("#help-list").contains(document.activeElement)) help().catch(() => {}); else if (C.view !== "help") clearInterval(timer); }, 5000);
  }
  $("#help-state").onchange = () => help().catch(err => toast(err.message, true));
  $("#help-list").addEventListener("click", async e => {
    const tr = e.target.closest("[data-help]"), b = e.target.closest("button"); if (!tr || !b) return;
    const id = tr.dataset.help;
    let path, body;
    if (b.classList.contains("assign")) { path = "assign"; body = {to: $(".assign-to", tr).value.trim() || C.me.user}; }
    else if (b.classList.contains("done")) { path = "done"; body = {}; }
    else if (b.classList.contains("feedback")) { path = "feedback"; body = {rating: $(".rating", tr).value}; }
    else return;
    b.disabled = true;
    try { await api(`/api/help-requests/${id}/${path}`, {method: "POST", body: JSON.stringify(body)}); await help(); }
    catch (err) { toast(err.message, true); b.disabled = false; }
  });
  $("#help-form").onsubmit = async e => {
    e.preventDefault();
    const f = e.target, btn = $("button[type=submit]", f);
    if (btn.disabled || householdMissing(f, $("#help-error"))) return;
    btn.disabled = true;
    const body = Object.fromEntries(new FormData(f));
    body.request_id = f.dataset.requestId || (f.dataset.requestId = requestId());
    try {
      await api("/api/help-requests", {method: "POST", body: JSON.stringify(body)});
      delete f.dataset.requestId; f.note.value = ""; f.household_id.value = ""; $("#help-error").textContent = "";
      toast(t("help_saved")); await help();
    } catch (err) { $("#help-error").textContent = err.message; }
    finally { btn.disabled = false; }
  };

  // -- visits ------------------------------------------------------------------------------
  function thisMonth() { const d = new Date(); return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}`; }
  function statusTag(s) { return `<span class="tag visit-${esc(s)}">${esc(t("vs_" + s))}</span>`; }
  function cellHtml(c) {
    const head = `<h4>${raw(c.name)} <span class="hint">${raw(c.code)}</span>${c.grid_member ? ` · ${esc(t("member"))} ${raw(c.grid_member)}` : ""}</h4>`;
    if (!c.total) return `<div class="coverage-cell" data-cell="${esc(c.code)}">${head}<p class="hint">${esc(t("cov_none"))}</p></div>`;
    const counts = `<p class="cov-counts">${esc(t("cov_rate"))}${sep()}<b>${Math.round(c.rate * 100)}%</b> · ${esc(t("vs_visited"))} ${c.visited} · ${esc(t("vs_due"))} ${c.due} · ${esc(t("vs_overdue"))} ${c.overdue}</p>`;
    return `<div class="coverage-cell" data-cell="${esc(c.code)}">${head}${counts}<table class="grid"><tbody>${c.households.map(h => `<tr data-household="${esc(h.household_id)}" data-status="${esc(h.status)}">
      <td>${raw(h.address)}</td><td>${statusTag(h.status)}</td>
      <td>${h.last_visit ? `${esc(t("cov_last"))}${sep()}${esc(fmtTime(h.last_visit))} ${raw(h.visitor)}` : ""}</td></tr>`).join("")}</tbody></table></div>`;
  }
  async function visits() {
    permBoxes();
    const m = $("#visit-month"); if (!m.value) m.value = thisMonth();
    $("#visits-csv").href = `/api/visits.csv?month=${encodeURIComponent(m.value)}&lang=${C.lang === "zh" ? "zh-CN" : "en"}`;
    const [cov] = await Promise.all([api("/api/visits/coverage?month=" + encodeURIComponent(m.value)), can("visits.write") ? loadHouseholds() : null]);
    const visitor = $('#visit-form [name="visitor"]'); if (C.me && !visitor.placeholder) { visitor.placeholder = C.me.user; visitor.dataset.raw = ""; }   // the user: site data
    // the month-end reminder (a console item): per grid member, the households still due
    $("#visit-remind").innerHTML = cov.remind.map(r => `<div class="banner visit-remind" role="status">${esc(t("cov_remind", {member: "\u0000", n: r.households.length})).split("\u0000").join(raw(r.grid_member || r.grid_cell))}</div>`).join("")
      + (!cov.ended && cov.cells.some(c => c.due) ? `<p class="hint">${esc(t("cov_days_left", {n: cov.days_left}))}</p>` : "");
    $("#coverage").innerHTML = cov.cells.map(cellHtml).join("");
  }
  $("#visit-month").onchange = () => visits().catch(err => toast(err.message, true));
  $("#visit-form").onsubmit = async e => {
    e.preventDefault();
    const f = e.target, btn = $("button[type=submit]", f);
    if (btn.disabled || householdMissing(f, $("#visit-error"))) return;
    btn.disabled = true;
    const body = Object.fromEntries(new FormData(f));
    if (body.visited_at) body.visited_at = new Date(body.visited_at).toISOString(); else delete body.visited_at;
    body.request_id = f.dataset.requestId || (f.dataset.requestId = requestId());
    try {
      await api("/api/visits", {method: "POST", body: JSON.stringify(body)});
      delete f.dataset.requestId; f.note.value = ""; f.visited_at.value = ""; f.household_id.value = ""; $("#visit-error").textContent = "";
      toast(t("visit_saved")); await visits();
    } catch (err) { $("#visit-error").textContent = err.message; }
    finally { btn.disabled = false; }
  };

  // -- check-ins (报平安) --------------------------------------------------------------------
  function hhmm(iso) { return iso ? iso.slice(11, 16) : ""; }     // the site's local time
  function ciStatus(c) {
    if (c.status === "checked_in") return t("ci_checked_in", {time: hhmm(c.at)}) + (c.alarm_id ? ` · ${t("ci_late")}` : "");
    if (c.status === "due") return t("ci_due", {time: hhmm(c.by)});
    if (c.status === "missed") return t("ci_missed", {time: hhmm(c.by)});
    return t("ci_excused", {state: t("care_" + c.care)});
  }
  function ciFollowUp(c) {
    if (c.alarm_id && c.alarm_state !== "resolved") return `<a href="#" class="ci-alarm" data-alarm="${c.alarm_id}">${esc(t("ci_open_alarm"))}</a>`;
    if (c.alarm_id) return `<span class="hint">${esc(t("ci_alarm_done"))}</span>`;
    return c.status === "missed" ? `<span class="hint">${esc(t("ci_alarm_pending"))}</span>` : "";
  }
  async function checkins() {
    const data = await api("/api/checkins");
    $("#checkin-date").textContent = data.date ? t("ci_date", {date: data.date}) : t("ci_no_engine");
    const list = data.checkins;
    $("#checkin-list").innerHTML = list.length ? `<table class="grid checkins"><thead><tr><th>${esc(t("ci_household"))}</th><th>${esc(t("ci_status"))}</th><th>${esc(t("ci_follow_up"))}</th></tr></thead>
      <tbody>${list.map(c => `<tr class="checkin-row" data-household="${esc(c.household_id)}" data-status="${esc(c.status)}">
        <td>${raw(c.address)}<div class="hint">${raw(c.grid_cell_name)}</div></td><td class="ci-status ci-${esc(c.status)}">${esc(ciStatus(c))}</td>
        <td class="ci-follow-up">${ciFollowUp(c)}</td></tr>`).join("")}</tbody></table>` : (data.date ? `<p class="hint">${esc(t("ci_none"))}</p>` : "");
    clearInterval(ciTimer);   // check-ins come in and deadlines pass: look again while the page is open
    ciTimer = setInterval(() => { if (C.view === "checkins") checkins().catch(() => {}); else clearInterval(ciTimer); }, 5000);
  }
  $("#checkin-list").addEventListener("click", e => {
    const a = e.target.closest(".ci-alarm"); if (!a) return;
    e.preventDefault();
    $('#nav [data-view="board"]').click();
    const card = $(`#alarms [data-id="${a.dataset.alarm}"]`);
    if (!card) { toast(t("ci_not_on_board")); return; }
    card.scrollIntoView({block: "center"}); card.classList.add("flash");
    setTimeout(() => card.classList.remove("flash"), 4000);
  });

  // the console's page switch: these views here, the rest in pages.js
  const pagesShow = Pages.show;
  Pages.show = view => {
    const fn = {help, visits, checkins}[view];
    if (fn) fn().catch(err => toast(err.message, true)); else pagesShow(view);
  };
  return {help, visits, checkins};
})();
