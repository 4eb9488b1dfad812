"use strict";
// Pages besides the board: history (filters, CSV), device health, installer, admin.
window.Pages = (function () {
  let options = null, households = null, histOffset = 0, detailTimer = null, editing = null;
  const PAGE = 50;

  async function loadHouseholds() {
    if (!households) households = await api("/api/households");
    const hh = households.households, cells = households.grid_cells;
    $$(".households-select").forEach(sel => {
      const first = sel.options[0]; const keep = sel.value;
      sel.innerHTML = ""; sel.appendChild(first);
      hh.forEach(h => sel.insertAdjacentHTML("beforeend", `<option value="${esc(h.id)}" title="${esc(h.id)}" data-raw>${esc(h.address)}</option>`));
      sel.value = keep;
    });
    $$(".cells-select").forEach(sel => {
      const first = sel.options[0]; const keep = sel.value;
      sel.innerHTML = ""; sel.appendChild(first);
      cells.forEach(c => sel.insertAdjacentHTML("beforeend", `<option value="${esc(c.code)}" data-raw>${esc(c.name)} (${esc(c.code)})</option>`));
      sel.value = keep;
    });
  }

  // -- history ------------------------------------------------------------------------------
  function historyQuery() {
    const f = new FormData($("#history-filter")), q = new URLSearchParams();
    for (const [k, v] of f) {
      if (!v) continue;
      if (k === "since" || k === "until") {
        const d = new Date(v + "T00:00:00"); if (k === "until") d.setDate(d.getDate() + 1);
        q.set(k, d.toISOString());
      } else q.set(k, v);
    }
    return q;
  }
  async function history() {
    await loadHouseholds();
    const q = historyQuery();
    // the export in the console's language (headers, severities, states...), local time
    $("#csv").href = "/api/history.csv?" + q + (q.toString() ? "&" : "") + "lang=" + (C.lang === "zh" ? "zh-CN" : "en");
    q.set("limit", PAGE); q.set("offset", histOffset);
    const data = await api("/api/history?" + q);
    $("#history-table").innerHTML = `<div class="table-wrap"><table class="grid history"><thead><tr><th>${t("time")}</th><th>${t("severity")}</th><th>${t("message")}</th>
      <th>${t("household")}</th><th>${t("state")}</th><th>${t("reason")}</th><th>${t("case")}</th></tr></thead><tbody>
      ${data.alarms.map(a => `<tr data-id="${a.id}"><td>${esc(fmtTime(a.raised_at))}</td><td><span class="sev ${esc(a.severity)}">${t(a.severity)}</span></td>
        <td>${rawNames(C.lang === "zh" ? a.message_zh : a.message_en, [a.household && a.household.address, a.device_name, a.grid && a.grid.name])}</td><td><span data-raw>${esc(a.household ? a.household.address : (a.device_name || a.device_id))}</span></td>
        <td>${t(a.state)}${a.resolved_by ? " · " + actorHtml(a.resolved_by) : a.ack_by ? " · " + actorHtml(a.ack_by) : ""}</td>
        <td>${a.resolve_reason ? esc(((C.reasonLabels || C.reasons)[a.resolve_reason] || {})[C.lang] || a.resolve_reason) : ""}${a.resolve_note ? (C.lang === "zh" ? "：" : ": ") + esc(a.resolve_note) : ""}</td>
        <td><span data-raw>${esc(a.case_id || "")}</span> ${esc(caseStatusLabel(a.case_status))}${a.case_refusal ? ` <span class="error">${esc(a.case_refusal[C.lang] || a.case_refusal.zh)}</span>` : ""}</td></tr>`).join("")}</tbody></table></div>`;
    $("#page").textContent = t("total", {n: data.total});
    $("#prev").disabled = histOffset === 0; $("#next").disabled = histOffset + PAGE >= data.total;
  }
  $("#history-filter").onsubmit = e => { e.preventDefault(); histOffset = 0; history().catch(err => toast(err.message, true)); };
  $("#prev").onclick = () => { histOffset = Math.max(0, histOffset - PAGE); history(); };
  $("#next").onclick = () => { histOffset += PAGE; history(); };

  // -- device health ------------------------------------------------------------------------
  let deviceData = null;
  // a fault code (decode_error, silent, ...) in the page's language; never the raw code when known
  const faultLabel = f => (I18N.zh["fault_" + f] ? t("fault_" + f) : f);
  async function devices() {
    const [d, f, m] = await Promise.all([api("/api/devices"), api("/api/faults"), api("/api/devices/modes")]);
    await loadHouseholds();
    deviceData = d;
    C.modes = m.devices;   // devices in test/maintenance mode (the board's count, the row's tag)
    $("#device-summary").innerHTML = Object.entries(d.summary).map(([k, n]) => `<span class="pill ${esc(k)}">${t("ds_" + k)}${t("colon")}<b>${n}</b></span>`).join("");
    // names over ids: the device's configured name and its household's address
    const names = new Map(d.devices.map(x => [x.device_id, x])), hh = new Map(households.households.map(h => [h.id, h]));
    const where = x => {
      const dev = x.device_id && names.get(x.device_id), h = hh.get(x.household_id || (dev && dev.household_id));
      const what = dev ? (dev.name || typeLabel(dev.device_type)) : "";
      return [what, h ? h.address : ""].filter(Boolean).join(" · ") || x.device_id || x.household_id || "";
    };
    $("#faults").innerHTML = f.faults.length ? `<div class="table-wrap"><table class="grid"><tbody>${f.faults.map(x => `<tr class="fault-row" data-fault="${esc(x.fault)}"><td><span class="sev ${esc(x.severity)}">${esc(faultLabel(x.fault))}</span></td>
      <td>${rawNames(C.lang === "zh" ? x.message_zh : x.message_en, [(names.get(x.device_id) || {}).name, (hh.get(x.household_id || (names.get(x.device_id) || {}).household_id) || {}).address])}</td><td><span data-raw title="${esc(x.device_id || x.household_id || "")}">${esc(where(x))}</span></td><td>${esc(fmtTime(x.raised_at))}</td></tr>`).join("")}</tbody></table></div>`
      : `<p class="hint">${t("no_faults")}</p>`;
    drawDevices();
  }
  function drawDevices() {
    if (!deviceData) return;
    const filter = $("#device-filter").value.trim().toLowerCase();
    const byId = new Map(households.households.map(h => [h.id, h]));
    const cellName = new Map(households.grid_cells.map(c => [c.code, c.name]));
    const groups = new Map();
    for (const dv of deviceData.devices) {
      const h = byId.get(dv.household_id);
      const hay = `${dv.device_id} ${dv.name || ""} ${dv.household_id || ""} ${h ? h.address : ""} ${dv.grid_cell || ""} ${cellName.get(dv.grid_cell) || ""}`.toLowerCase();
      if (filter && !hay.includes(filter)) continue;
      const cell = dv.grid_cell || "?", hk = dv.household_id || "";
      if (!groups.has(cell)) groups.set(cell, new Map());
      const g = groups.get(cell); if (!g.has(hk)) g.set(hk, []); g.get(hk).push(dv);
    }
    const now = Date.now(), modes = new Map(C.modes.map(m => [m.device_id, m]));
    const modeOf = dv => modes.has(dv.device_id) ? " " + modeTag(modes.get(dv.device_id)) : "";
    // a device without a name: its type and where it is (烟感 · 田林路200弄7号302室), its id in the tooltip
    const where = dv => dv.household_id ? (byId.get(dv.household_id) || {}).address || dv.household_id : cellName.get(dv.grid_cell) || dv.grid_cell || "";
    const devName = dv => dv.name ? `<span data-raw title="${esc(dv.device_id)}">${esc(dv.name)}</span>`
      : `<span class="unnamed" data-raw-title title="${esc(dv.device_id)}">${esc(typeLabel(dv.device_type) || t("device"))}${where(dv) ? ` · <span data-raw>${esc(where(dv))}</span>` : ""}</span>`;
    const row = dv => `<tr class="dev ${esc(dv.state)}" data-device="${esc(dv.device_id)}" data-mode="${esc((modes.get(dv.device_id) || {}).mode || "normal")}"><td>${devName(dv)}</td><td>${esc(typeLabel(dv.device_type))}</td>
      <td><span class="dot ${esc(dv.state)}"></span>${t("ds_" + dv.state)}${modeOf(dv)}${dv.fault ? ` <span class="tag fault">${esc(faultLabel(dv.fault))}</span>` : ""}</td><td>${dv.battery != null ? esc(Math.round(dv.battery)) + "%" : ""}${dv.battery_low ? " ⚠" : ""}</td>
      <td>${dv.last_seen ? fmtAgo(now - dv.last_seen * 1000) : t("never")}</td></tr>`;
    $("#device-groups").innerHTML = [...groups.entries()].map(([cell, hs]) => `<details open class="cell"><summary>${t("grid")} <span data-raw>${esc(cellName.get(cell) || cell)} (${esc(cell)})</span></summary>
      ${[...hs.entries()].map(([hk, list]) => `<div class="hgroup"><h4>${hk ? `<span data-raw>${esc((byId.get(hk) || {}).address || hk)}</span>` : t("shared")}</h4>
        <div class="table-wrap"><table class="grid"><thead><tr><th>${t("device")}</th><th>${t("f_type")}</th><th>${t("state")}</th><th>${t("battery")}</th><th>${t("last_seen")}</th></tr></thead>
        <tbody>${list.map(row).join("")}</tbody></table></div></div>`).join("")}</details>`).join("");
  }
  $("#device-filter").oninput = drawDevices;

  // -- installer ----------------------------------------------------------------------------
  async function installer() {
    if (!options) options = await api("/api/installer/options");
    await loadHouseholds();
    const typeSel = $("#type-select");
    if (!typeSel.options.length) options.device_types.forEach(x => typeSel.insertAdjacentHTML("beforeend", `<option value="${esc(x)}">${esc(typeLabel(x))}</option>`));
    else [...typeSel.options].forEach(o => { o.textContent = typeLabel(o.value); });  // the language may have changed
    const profSel = $("#profile-select");
    // a profile by what it is (its type, the line its file gives), the id in the tooltip; the
    // labels are in the language of the moment the list was first drawn: drawn again on a change
    if (profSel.options.length === 1 || profSel.dataset.lang !== C.lang) {
      const keep = profSel.value;
      profSel.innerHTML = `<option value="" data-i18n="default_profile">${esc(t("default_profile"))}</option>` + options.profiles.map(p =>
        `<option value="${esc(p.id)}" title="${esc(p.id)}" data-raw>${esc([typeLabel(p.device_type), p.description || p.id].filter(Boolean).join(" · "))}</option>`).join("");
      profSel.value = keep; profSel.dataset.lang = C.lang;
    }
    listBar();
    const [u, cfg] = await Promise.all([api("/api/devices/unknown"), api("/api/config/devices?" + listQuery())]);
    // Zigbee devices of the coordinator's list: with what zero-config proposes (zigbee.js)
    await Zigbee.inbox($("#zigbee-inbox"), fillFromProposal);
    u.unknown = u.unknown.filter(x => !x.zigbee);
    $("#unknown").innerHTML = u.unknown.length ? `<table class="grid"><tbody>${u.unknown.map(x => `<tr class="unknown-device" data-topic="${esc(x.id)}">
      <td><code data-raw>${esc(x.id)}</code><div class="hint">${t("sample")}${t("colon")}<code data-raw>${esc(x.sample)}</code></div></td><td>${x.count} ${t("seen")}</td>
      <td><button class="register">${t("register")}</button></td></tr>`).join("")}</tbody></table>` : $("#zigbee-inbox").innerHTML ? "" : `<p class="hint">${t("no_unknown")}</p>`;
    const last = Math.min(list.offset + cfg.devices.length, cfg.total);
    $("#cfg-range").textContent = cfg.total ? t("cfg_range", {from: list.offset + 1, to: last, n: cfg.total}) : "";
    $("#cfg-prev").disabled = list.offset === 0; $("#cfg-next").disabled = last >= cfg.total;
    $("#configured").innerHTML = !cfg.devices.length ? `<p class="hint">${t("no_match")}</p>` : `<table class="grid"><tbody>${cfg.devices.map(d => `<tr class="configured-device" data-device="${esc(d.id)}" data-mode="${esc(d.mode)}">
      <td><b data-raw>${esc(d.name || d.id)}</b> ${d.mode !== "normal" ? modeTag({device_id: d.id, mode: d.mode, name: d.name, until: d.mode_until}) : ""}<div class="hint">${esc(typeLabel(d.type))} · <span data-raw>${esc(placeOf(d))}</span> · <code data-raw>${esc(d.id)}</code> · <code data-raw>${esc(d.topic || d.zigbee2mqtt || "")}</code></div></td>
      <td class="actions"><button class="edit">${t("edit")}</button><button class="detail">${t("readings")}</button>
      ${d.mode === "normal" ? durationSelect("mode-duration", t("mode_duration")) : ""}<button class="mode">${d.mode === "normal" ? t("test_mode_on") : t("test_mode_off")}</button><button class="remove">${t("remove")}</button></td></tr>`).join("")}</tbody></table>`;
    installer.devices = cfg.devices;
    const formDur = $("#duration-select");
    if (!formDur.options.length || formDur.dataset.lang !== C.lang) {
      const keep = formDur.value; formDur.innerHTML = durationOptions(); formDur.dataset.lang = C.lang; if (keep) formDur.value = keep;
    }
  }
  // the configured devices: searched, filtered and paged on the server (thousands of them)
  const list = {offset: 0, size: 50};
  function listQuery() {
    const q = new URLSearchParams({offset: list.offset, limit: list.size});
    for (const k of ["q", "household", "type", "state"]) { const v = ($(`#cfg-${k}`) || {}).value; if (v) q.set(k, v.trim()); }
    return q.toString();
  }
  function listBar() {
    let bar = $("#cfg-bar");
    if (!bar) {
      $("#configured").insertAdjacentHTML("beforebegin", `<div id="cfg-bar" class="filters">
        <input id="cfg-q" type="search" maxlength="100"><select id="cfg-household" class="households-select"><option value=""></option></select>
        <select id="cfg-type"></select><select id="cfg-state"></select>
        <div class="pager"><button type="button" id="cfg-prev"></button><span id="cfg-range"></span><button type="button" id="cfg-next"></button></div></div>`);
      bar = $("#cfg-bar");
      let timer = null;
      const again = () => { list.offset = 0; installer().catch(err => toast(err.message, true)); };
      $("#cfg-q").oninput = () => { clearTimeout(timer); timer = setTimeout(again, 250); };
      ["#cfg-household", "#cfg-type", "#cfg-state"].forEach(id => { $(id).onchange = again; });
      $("#cfg-prev").onclick = () => { list.offset = Math.max(0, list.offset - list.size); installer().catch(err => toast(err.message, true)); };
      $("#cfg-next").onclick = () => { list.offset += list.size; installer().catch(err => toast(err.message, true)); };
      loadHouseholds();
    }
    // words in the console's language (it may have changed since)
    $("#cfg-q").placeholder = t("cfg_search"); $("#cfg-q").setAttribute("aria-label", t("cfg_search"));
    $("#cfg-household").options[0].textContent = t("all_households");
    $("#cfg-prev").textContent = t("prev"); $("#cfg-next").textContent = t("next");
    const fill = (sel, first, values, label) => {
      const keep = sel.value;
      sel.innerHTML = `<option value="">${esc(first)}</option>` + values.map(v => `<option value="${esc(v)}">${esc(label(v))}</option>`).join("");
      sel.value = keep;
    };
    fill($("#cfg-type"), t("all_types"), options.device_types, typeLabel);
    fill($("#cfg-state"), t("all_states"), ["normal", "test", "maintenance", "online", "degraded", "offline", "unknown"],
      v => ["normal", "test", "maintenance"].includes(v) ? t("mode_" + v) : t("ds_" + v));
  }
  // while a save or a mode change is in flight: the control shows it and takes no second click
  async function busy(el, button, work) {
    if (el.dataset.busy) return;
    el.dataset.busy = "1"; el.classList.add("busy"); el.setAttribute("aria-busy", "true");
    const buttons = $$("button", el), label = button.textContent;
    buttons.forEach(b => { b.disabled = true; });
    button.textContent = t("saving"); button.classList.add("busy-indicator");
    try { return await work(); } finally {
      delete el.dataset.busy; el.classList.remove("busy"); el.removeAttribute("aria-busy");
      buttons.forEach(b => { b.disabled = false; });
      button.textContent = label; button.classList.remove("busy-indicator");
    }
  }
  // where a configured device is, in words: its household's address or its grid cell's name
  function placeOf(d) {
    const h = households && households.households.find(x => x.id === d.household);
    const c = households && households.grid_cells.find(x => x.code === d.grid_cell);
    return h ? h.address : c ? c.name : (d.household || d.grid_cell || "");
  }
  // how long a test/maintenance mode lasts (it then ends by itself): 30 min ... 24 h, default 2 h
  function durationLabel(v) { const m = /^(\d+)([mh])$/.exec(v); return m ? t(m[2] === "h" ? "dur_h" : "dur_m", {n: m[1]}) : v; }
  function durationOptions() {
    const opts = (options && options.mode_durations) || ["2h"], dflt = (options && options.mode_duration_default) || "2h";
    return opts.map(v => `<option value="${esc(v)}"${v === dflt ? " selected" : ""}>${esc(durationLabel(v))}</option>`).join("");
  }
  function durationSelect(cls, label) { return `<select class="${cls}" aria-label="${esc(label)}" title="${esc(label)}">${durationOptions()}</select>`; }
  $("#duration-select").onchange = e => { e.target.dataset.touched = "1"; };
  $("#device-form").elements.topic.dataset.raw = "";   // its placeholder is the topic's form
  function fillForm(d, isEdit) {
    const f = $("#device-form");
    editing = isEdit ? d.id : null;
    $("#form-title").textContent = t(isEdit ? "edit_device" : "add_device");
    const dflt = {mode: "normal", type: options ? options.device_types[0] : ""};
    for (const k of ["id", "type", "household", "grid_cell", "name", "topic", "zigbee2mqtt", "profile", "mode"]) f.elements[k].value = d[k] || dflt[k] || "";
    const dur = f.elements.duration;
    if (dur) { dur.value = (options && options.mode_duration_default) || "2h"; delete dur.dataset.touched; }
    f.elements.id.readOnly = isEdit;
    $$(".ferr", f).forEach(e => { e.textContent = ""; }); $("#form-error").textContent = "";
    f.scrollIntoView({block: "nearest"});
  }
  // a Zigbee device of the inbox: the form filled with the proposal (type, profile, name in
  // Zigbee2MQTT, an id); the installer picks the household, names it and saves (one step).
  // The id follows the household until it is edited by hand.
  let suggested = null;
  function fillFromProposal(d, proposal) {
    fillForm(d, false);
    suggested = {proposal, ieee: d.ieee_address, id: d.id};
    $("#device-form").elements.household.focus();
  }
  $("#device-form").elements.household.addEventListener("change", e => {
    const f = $("#device-form");
    if (!suggested || editing || f.elements.id.value !== suggested.id) return;
    suggested.id = f.elements.id.value = Zigbee.suggestId(suggested.proposal, e.target.value, suggested.ieee);
  });
  $("#unknown").addEventListener("click", e => {
    const tr = e.target.closest(".unknown-device"); if (!tr || !e.target.classList.contains("register")) return;
    const topic = tr.dataset.topic, z2m = topic.startsWith("zigbee2mqtt/");
    const tail = topic.split("/").pop();
    suggested = null;
    // a Zigbee name says nothing about the device (by default it is the IEEE address):
    // the type is guessed from a plain MQTT topic only
    fillForm({id: z2m ? "" : tail, topic: z2m ? "" : topic, zigbee2mqtt: z2m ? topic.slice(12) : "", type: z2m ? "" : guessType(tail)}, false);
    $("#device-form").elements.household.focus();
  });
  function guessType(id) {
    const m = [["caller", "emergency_caller"], ["sos", "emergency_caller"], ["smoke", "smoke_detector"], ["gas", "gas_detector"],
      ["leak", "water_leak_detector"], ["door", "door_contact"], ["motion", "motion_sensor"], ["meter", "electricity_meter"]];
    const hit = m.find(([k]) => id.toLowerCase().includes(k)); return hit ? hit[1] : options.device_types[0];
  }
  $("#form-reset").onclick = () => fillForm({}, false);
  $("#device-form").onsubmit = e => {
    e.preventDefault();
    busy(e.target, $("button[type=submit]", e.target), () => saveDevice(e.target));
  };
  async function saveDevice(f) {
    const body = {};
    for (const k of ["id", "type", "household", "grid_cell", "name", "topic", "zigbee2mqtt", "profile", "mode"]) {
      const v = f.elements[k].value.trim(); if (v) body[k] = v;
    }
    // a test/maintenance mode ends by itself; an edit keeping the device's mode keeps its end
    // unless another duration is chosen
    const cur = editing && (installer.devices || []).find(x => x.id === editing), dur = f.elements.duration;
    if (body.mode && body.mode !== "normal" && dur && !(cur && cur.mode === body.mode && !dur.dataset.touched)) body.duration = dur.value;
    $$(".ferr", f).forEach(x => { x.textContent = ""; }); $("#form-error").textContent = "";
    try {
      if (editing) await api(`/api/config/devices/${encodeURIComponent(editing)}`, {method: "PUT", body: JSON.stringify(body)});
      else await api("/api/config/devices", {method: "POST", body: JSON.stringify(body)});
      $("#form-error").textContent = "";
      toast(t("saved")); fillForm({}, false); await installer();
    } catch (err) {
      const rest = [];
      (Array.isArray(err.detail) ? err.detail : []).forEach(d => {
        const field = (d.loc || []).slice(1).join("."), slot = $(`.ferr[data-for="${CSS.escape(field)}"]`, f);
        if (slot) slot.textContent = fieldText(d); else rest.push(d);
      });
      $("#form-error").textContent = rest.length ? errorText({detail: rest}) : (Array.isArray(err.detail) ? "" : err.message);
    }
  }
  $("#configured").addEventListener("click", async e => {
    const tr = e.target.closest(".configured-device"); if (!tr) return;
    const id = tr.dataset.device, d = (installer.devices || []).find(x => x.id === id);
    try {
      if (e.target.classList.contains("edit")) fillForm(d, true);
      else if (e.target.classList.contains("mode")) {
        const on = tr.dataset.mode === "normal", dur = $(".mode-duration", tr);
        await busy(tr, e.target, async () => {
          await api(`/api/devices/${encodeURIComponent(id)}/mode`, {method: "PUT", body: JSON.stringify(on ? {mode: "test", duration: dur ? dur.value : undefined} : {mode: "normal"})});
          await installer();
        });
        openDetail(id);
      } else if (e.target.classList.contains("remove")) {
        const shown = ($("b[data-raw]", tr) || {}).textContent || id;   // its name, not its id
        if (!confirm(t("confirm_remove", {id: shown}))) return;
        await busy(tr, e.target, async () => { await api(`/api/config/devices/${encodeURIComponent(id)}`, {method: "DELETE"}); await installer(); });
      } else if (e.target.classList.contains("detail")) openDetail(id);
    } catch (err) { toast(err.message, true); }
  });
  async function drawDetail(id) {
    const [r, tests] = await Promise.all([api(`/api/devices/${encodeURIComponent(id)}/readings`), api(`/api/devices/${encodeURIComponent(id)}/tests`)]);
    const box = $("#device-detail");
    box.hidden = false; box.dataset.device = id;
    const dev = (installer.devices || []).find(x => x.id === id) || {};
    box.innerHTML = `<h4><span data-raw title="${esc(id)}">${esc(dev.name || id)}</span> · <span class="dot ${esc(r.device.state)}"></span>${t("ds_" + r.device.state)}</h4>
      <h5>${t("tests")}</h5>${tests.tests.length ? `<ul class="tests">${tests.tests.map(x => `<li class="test-record" data-rule="${esc(x.rule_id)}">${t("test_badge")} · ${esc(fmtTime(x.ts))} · ${testLabel(x)}</li>`).join("")}</ul>` : `<p class="hint">${t("no_tests")}</p>`}
      <h5>${t("last_readings")}</h5>${r.readings.length ? `<div class="table-wrap"><table class="grid readings"><tbody>${r.readings.slice().reverse().map(x => `<tr class="reading" data-kind="${esc(x.kind)}"><td>${esc(fmtTime(x.ts))}</td><td>${esc(kindLabel(x.kind))}</td><td>${valueCell(x.kind, x.value, x.unit)}</td><td>${esc(qualityLabel(x.quality))}</td></tr>`).join("")}</tbody></table></div>` : `<p class="hint">${t("no_readings")}</p>`}`;
  }
  // a reading's value in words; a device's own word the catalogue does not know is data
  function valueCell(kind, value, unit) {
    const w = readingValue(kind, value, unit);
    return w === null ? `<code data-raw>${esc(String(value))}</code>` : esc(w);
  }
  // a test record: a press of a rule (its kind from the rule's id: sos, smoke, ...) or a
  // reading while in test mode ("reading:<kind>"); the value in words
  function testLabel(x) {
    if (x.rule_id.startsWith("reading:")) { const k = x.rule_id.slice(8); return `${esc(t("test_reading"))} ${esc(kindLabel(k))} · ${valueCell(k, x.value, "")}`; }
    if (typeof x.value === "string" && known("fault_" + x.value)) return esc(t("fault_" + x.value));
    // a rule's trigger: the kind its id names (sos, smoke, ...), else the rule's id (site data)
    const what = known("kind_" + x.rule_id) ? esc(kindLabel(x.rule_id)) : `<span data-raw>${esc(x.rule_id)}</span>`;
    return `${what} · ${valueCell(x.rule_id, x.value, "")}`;
  }
  function openDetail(id) {
    clearInterval(detailTimer);
    drawDetail(id).catch(err => toast(err.message, true));
    detailTimer = setInterval(() => { if (C.view === "installer") drawDetail(id).catch(() => {}); else clearInterval(detailTimer); }, 1500);
  }
  async function drawChecklist() {
    const hid = $("#checklist-household").value;
    if (!hid) { $("#checklist").innerHTML = ""; return; }
    const c = await api(`/api/households/${encodeURIComponent(hid)}/checklist`);
    // an item about a device starts with the device's name (site data, marked as such)
    const item = i => {
      const s = C.lang === "zh" ? i.zh : i.en, d = i.device_id && (installer.devices || []).find(x => x.id === i.device_id);
      const name = d ? (d.name || d.id) : "";
      return name && s.startsWith(name) ? `<span data-raw>${esc(name)}</span>${esc(s.slice(name.length))}` : esc(s);
    };
    $("#checklist").innerHTML = `<ul class="checklist">${c.items.map(i => `<li class="${i.ok ? "ok" : "todo"}" data-item="${esc(i.id)}">${i.ok ? "✔" : "✘"} ${item(i)}</li>`).join("")}</ul>
      ${c.signed_off ? `<p class="ok">${esc(t("signed_off", {ts: fmtTime(c.signed_off.ts), who: c.signed_off.actor}))}</p>` : ""}
      ${can("devices.write") ? `<button id="sign-off" class="primary" ${c.complete ? "" : "disabled"}>${t("sign_off")}</button>` : ""}`;
    const b = $("#sign-off");
    if (b) b.onclick = async () => { try { await api(`/api/households/${encodeURIComponent(hid)}/commissioned`, {method: "POST"}); drawChecklist(); } catch (err) { toast(err.message, true); } };
  }
  $("#checklist-household").onchange = () => drawChecklist().catch(err => toast(err.message, true));

  // -- admin ----------------------------------------------------------------------------------
  async function admin() {
    const [u, a, hh] = await Promise.all([api("/api/users"), api("/api/audit?limit=200"), api("/api/households").catch(() => null)]);
    // a household (care states, visits, commissioning) by its address, the id in the tooltip
    const addr = new Map(hh ? hh.households.map(h => [h.id, h.address]) : []);
    // an alarm by its number and category (报警 #9 · 火警), a help request by its number
    const alarmIds = [...new Set(a.audit.filter(x => x.action.startsWith("alarm.") && /^\d+$/.test(x.target || "")).map(x => x.target))];
    const cat = new Map([...C.alarms.values()].map(x => [String(x.id), x.category]));
    await Promise.all(alarmIds.filter(id => !cat.has(id)).slice(0, 50).map(id =>
      api(`/api/alarms/${id}`).then(x => cat.set(id, x.category)).catch(() => {})));
    const target = x => {
      if (addr.has(x.target)) return `<td data-raw title="${esc(x.target)}">${esc(addr.get(x.target))}</td>`;
      if (/^\d+$/.test(x.target || "") && (x.action.startsWith("alarm.") || x.action.startsWith("help."))) {
        const what = x.action.startsWith("alarm.") ? t("audit_alarm", {id: x.target}) + (cat.get(x.target) ? " · " + catLabel(cat.get(x.target)) : "") : t("audit_help", {id: x.target});
        return `<td class="audit-target">${esc(what)}</td>`;
      }
      return `<td data-raw>${esc(x.target)}</td>`;
    };
    $("#users").innerHTML = `<table class="grid"><tbody>${u.users.map(x => `<tr data-user="${esc(x.username)}"><td data-raw>${esc(x.username)}</td><td>${t("role_" + x.role)}</td>
      <td>${x.disabled ? t("disabled") : `<button class="disable">${t("disable")}</button>`}</td></tr>`).join("")}</tbody></table>`;
    $("#audit").innerHTML = `<table class="grid"><thead><tr><th>${t("time")}</th><th>${t("actor")}</th><th>${t("action")}</th><th>${t("target")}</th></tr></thead>
      <tbody>${a.audit.map(x => `<tr data-action="${esc(x.action)}" data-actor="${esc(x.actor)}"><td>${esc(fmtTime(x.ts))}</td><td>${actorHtml(x.actor)}</td><td>${esc(auditAction(x))}</td>${target(x)}</tr>`).join("")}</tbody></table>`;
  }
  function auditAction(x) {   // in words; a mode change with the mode and its end
    const k = "act_" + x.action, label = t(k) === k ? x.action : t(k), d = x.detail || {};
    if (x.action.startsWith("command.") && d.command_action) {   // linkage: which command, why
      const parts = [t("cmd_" + d.command_action)];
      if (d.reason && I18N.zh["cmdr_" + d.reason]) parts.push(t("cmdr_" + d.reason));
      return C.lang === "zh" ? `${label}：${parts.join("，")}` : `${label}: ${parts.join(", ")}`;
    }
    if (!x.action.startsWith("device.mode") || !d.mode) return label;
    const parts = [t("mode_" + d.mode)];
    if (d.until) parts.push(t("mode_until", {time: fmtTime(d.until)}));
    if (d.while_stopped) parts.push(t("while_stopped"));
    return C.lang === "zh" ? `${label}：${parts.join("，")}` : `${label}: ${parts.join(", ")}`;
  }
  $("#users").addEventListener("click", async e => {
    const tr = e.target.closest("[data-user]"); if (!tr || !e.target.classList.contains("disable")) return;
    try { await api(`/api/users/${encodeURIComponent(tr.dataset.user)}/disable`, {method: "POST"}); admin(); } catch (err) { toast(err.message, true); }
  });
  $("#user-form").onsubmit = async e => {
    e.preventDefault(); const f = new FormData(e.target);
    try { await api("/api/users", {method: "POST", body: JSON.stringify(Object.fromEntries(f))}); e.target.reset(); $("#user-error").textContent = ""; admin(); }
    catch (err) { $("#user-error").textContent = err.message; }
  };

  const pages = {history, devices, installer: () => installer().then(drawChecklist), admin, zigbee: () => Zigbee.page()};
  return {show(view) { const fn = pages[view]; if (fn) fn().catch(err => toast(err.message, true)); },
    // devices went in or out of test/maintenance mode (the live stream's "modes" event)
    modesChanged() { if (C.view === "devices") drawDevices(); else if (C.view === "installer") installer().catch(() => {}); }};
})();
