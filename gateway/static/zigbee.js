"use strict";
// Zigbee zero-config: what the gateway proposes for each device of the Zigbee network
// (Zigbee2MQTT's bridge/devices, GET /api/installer/zigbee), shown in the installer's inbox
// and on the network page, where the selected devices are registered in one step
// (POST /api/installer/zigbee/register: one validated edit, applied without a restart).
window.Zigbee = (function () {
  let net = [], households = null, configured = [];

  // an expose in words when the console knows it, else the converter's own label
  function propLabel(prop, label) { const k = "zprop_" + prop; return I18N.zh[k] ? t(k) : (label || prop); }
  // the same as HTML: the converter's own label marked as its data (data-raw)
  function propHtml(prop, label) { return I18N.zh["zprop_" + prop] ? esc(propLabel(prop)) : `<span data-raw>${esc(label || prop)}</span>`; }
  function why(p) {
    if (p.device_type) return t("z_by", {what: propLabel(p.trigger)});
    return t("z_why_" + p.why, {what: propLabel(p.trigger)});
  }
  function notes(p) {
    const out = [];
    if (p.unread_alarms.length) out.push(`<div class="error z-unread">⚠ ${esc(t("z_unread_alarms", {list: p.unread_alarms.map(x => propLabel(x)).join(C.lang === "zh" ? "、" : ", ")}))}</div>`);
    if (p.unmapped.length) out.push(`<div class="hint z-unmapped">${esc(t("z_unmapped"))}：${p.unmapped.map(u => propHtml(u.property, u.label)).join(C.lang === "zh" ? "、" : ", ")}</div>`);
    if (p.unmapped_values.length) out.push(`<div class="hint z-values">${esc(t("z_unmapped_values"))}：${p.unmapped_values.map(v => `<code>${esc(v)}</code>`).join(" ")}</div>`);
    return out.join("");
  }
  // what the device is: vendor, model and the converter's description
  // (the converter's words are the vendor's product data, not the console's: data-raw)
  function what(d) { return `<b data-raw>${esc(d.vendor)} ${esc(d.model)}</b><div class="hint"><span data-raw>${esc(d.description || "")}</span> · <code data-raw>${esc(d.friendly_name)}</code></div>`; }
  function proposal(d) {
    const p = d.proposal;
    return p.device_type
      ? `<span class="z-type" data-type="${esc(p.device_type)}">${esc(typeLabel(p.device_type))}</span> <span class="hint">${esc(t("z_profile"))} <code>${esc(p.profile)}</code> · ${esc(why(p))}</span>${notes(p)}`
      : `<span class="hint z-none">${esc(t("z_not_proposed"))}：${esc(why(p))}</span>`;
  }
  // the same rule as drivers.zigbee2mqtt.suggest_id (the server makes it when none is sent)
  function suggestId(p, household, ieee) {
    const tail = household ? household.replace(/^h-/, "") : (ieee || "").toLowerCase().replace(/[^0-9a-f]/g, "").slice(-6) || "zigbee";
    const base = `${p.id_prefix}-${tail}`.replace(/[^A-Za-z0-9_.-]/g, "-").slice(0, 60);
    const taken = new Set(configured.map(d => d.id));
    if (!taken.has(base)) return base;
    let n = 2; while (taken.has(`${base}-${n}`)) n++;
    return `${base}-${n}`;
  }
  async function load() {
    const [z, hh, cfg] = await Promise.all([api("/api/installer/zigbee"), api("/api/households"), api("/api/config/devices")]);
    net = z.devices; households = hh; configured = cfg.devices;
    return net;
  }

  // -- the installer page's inbox: each Zigbee device with its proposal, one step to register
  async function inbox(box, fillForm) {
    await load();
    if (!net.length) { box.innerHTML = ""; return; }
    box.innerHTML = `<div class="z-head"><b>${esc(t("z_inbox", {n: net.length}))}</b> <button type="button" id="to-zigbee">${esc(t("z_open_network"))}</button></div>
      <table class="grid"><tbody>${net.map(d => `<tr class="z-inbox" data-topic="${esc(d.topic)}" data-type="${esc(d.proposal.device_type || "")}">
        <td>${what(d)}</td><td>${proposal(d)}</td>
        <td>${d.proposal.device_type ? `<button class="z-register">${esc(t("register"))}</button>` : ""}</td></tr>`).join("")}</tbody></table>`;
    $("#to-zigbee", box).onclick = () => show("zigbee");
    box.onclick = e => {
      const tr = e.target.closest(".z-inbox"); if (!tr || !e.target.classList.contains("z-register")) return;
      const d = net.find(x => x.topic === tr.dataset.topic), p = d.proposal;
      fillForm({id: suggestId(p, "", d.ieee_address), type: p.device_type, profile: p.profile, zigbee2mqtt: d.friendly_name, topic: "", ieee_address: d.ieee_address}, p);
    };
  }

  // -- the network page: every device, its proposal, household and name; register the selected
  function householdOptions() {
    return `<option value="">${esc(t("choose_household"))}</option>` + households.households.map(h => `<option value="${esc(h.id)}">${esc(h.address)}</option>`).join("");
  }
  async function page() {
    await load();
    const rows = net.map((d, i) => {
      const p = d.proposal, ok = !!p.device_type;
      return `<tr class="z-row${ok ? "" : " z-skip"}" data-i="${i}" data-topic="${esc(d.topic)}" data-type="${esc(p.device_type || "")}">
        <td><input type="checkbox" class="z-pick" aria-label="${esc(t("z_select"))}" ${ok ? "" : "disabled"}></td>
        <td>${what(d)}</td><td>${proposal(d)}</td>
        <td>${ok ? `<select class="z-household" aria-label="${esc(t("f_household"))}">${householdOptions()}</select>` : ""}</td>
        <td>${ok ? `<input class="z-name" maxlength="100" aria-label="${esc(t("f_name"))}" placeholder="${esc(t("z_name_hint", {type: typeLabel(p.device_type)}))}">` : ""}
          <em class="ferr z-err"></em></td></tr>`;
    }).join("");
    const proposed = net.filter(d => d.proposal.device_type).length;
    $("#zigbee-network").innerHTML = net.length ? `<p class="hint">${esc(t("z_summary", {n: net.length, p: proposed}))}</p>
      <table class="grid"><thead><tr><th><input type="checkbox" id="z-all" aria-label="${esc(t("z_select_all"))}"></th><th>${esc(t("device"))}</th><th>${esc(t("z_proposal"))}</th>
      <th>${esc(t("f_household"))}</th><th>${esc(t("f_name"))}</th></tr></thead><tbody>${rows}</tbody></table>`
      : `<p class="hint">${esc(t("z_empty"))}</p>`;
    $("#zigbee-register").disabled = !proposed;
    const all = $("#z-all");
    if (all) all.onchange = () => $$(".z-row .z-pick:not(:disabled)").forEach(c => { c.checked = all.checked; });
  }
  // choosing a household or typing a name selects the row
  $("#zigbee-network").addEventListener("change", e => {
    const tr = e.target.closest(".z-row"); if (!tr || e.target.classList.contains("z-pick")) return;
    const pick = $(".z-pick", tr); if (pick && !pick.disabled) pick.checked = true;
  });
  $("#zigbee-register").onclick = async () => {
    const picked = $$(".z-row").filter(tr => $(".z-pick", tr).checked);
    $$(".z-err").forEach(x => { x.textContent = ""; }); $("#zigbee-error").textContent = "";
    if (!picked.length) { $("#zigbee-error").textContent = t("z_none_selected"); return; }
    const body = {devices: picked.map(tr => {
      const d = net[+tr.dataset.i], p = d.proposal, hh = $(".z-household", tr).value;
      const row = {zigbee2mqtt: d.friendly_name, type: p.device_type, profile: p.profile, name: $(".z-name", tr).value.trim()};
      if (hh) row.household = hh;
      return row;
    })};
    try {
      const r = await api("/api/installer/zigbee/register", {method: "POST", body: JSON.stringify(body)});
      toast(t("z_registered", {n: r.registered.length}));
      $("#zigbee-done").innerHTML = `<ul>${r.registered.map(d => `<li class="z-done" data-device="${esc(d.id)}">${esc(d.name || d.id)} · ${esc(typeLabel(d.type))} · <code>${esc(d.id)}</code></li>`).join("")}</ul>`;
      await page();
    } catch (err) {
      const rest = [];
      (Array.isArray(err.detail) ? err.detail : []).forEach(x => {
        const loc = x.loc || [], tr = loc[1] === "devices" ? picked[loc[2]] : null;
        if (tr) $(".z-err", tr).textContent = x.msg; else rest.push(x.msg);
      });
      $("#zigbee-error").textContent = rest.join("; ") || (Array.isArray(err.detail) ? "" : err.message);
    }
  };
  return {inbox, page, suggestId};
})();
