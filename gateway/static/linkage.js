"use strict";
// Linkage on the alarm card (联动, gateway/linkage.py): what was done (已自动关阀 ✔ 02:13:05),
// and the staff's commands (关阀 / 开阀 / 鸣笛 / 静音 / 断电 / 通电) with one confirmation step.
// GET /api/alarms/{id}/commands lists the devices the card may command; POST sends one.
// The inverses (开阀, 静音, 通电) need commands.restore: offered only to those who hold it.
window.Linkage = (function () {
  const INVERSE = new Set(["open_valve", "siren_off", "switch_on"]);
  const time = iso => new Date(iso).toLocaleTimeString(C.lang === "zh" ? "zh-CN" : "en-GB", {hour12: false});

  // the last command per device and action (a re-open after a close shows both)
  function latest(a) {
    const by = new Map();
    for (const c of a.commands || []) by.set(`${c.device_id}|${c.action}`, c);
    return [...by.values()];
  }
  function line(c) {
    const verb = t("cmd_" + c.action), what = t("cmd_done_" + c.action);
    const reason = c.reason && I18N.zh["cmdr_" + c.reason] ? t("cmdr_" + c.reason) : "";
    let text;
    if (c.status === "confirmed") text = `${t(c.automatic ? "cmd_st_confirmed_auto" : "cmd_st_confirmed", {what})} ✔ ${time(c.ts)}`;
    else if (c.status === "sent") text = t("cmd_st_sent", {verb, n: c.attempts || 1});
    else if (c.status === "skipped") text = t("cmd_st_skipped", {verb, reason});
    else text = t("cmd_st_" + c.status, {verb});
    const by = c.automatic ? "" : ` <small>${t("cmd_by", {who: actorHtml(c.by)})}</small>`;
    return `<span class="cmd ${esc(c.status)}" data-device="${esc(c.device_id)}" data-action="${esc(c.action)}" data-status="${esc(c.status)}">${esc(text)} · <span data-raw>${esc(c.device_name || c.device_id)}</span>${by}</span>`;
  }
  function html(a) {
    const list = latest(a);
    return list.length ? `<div class="commands">${list.map(line).join(" ")}</div>` : "";
  }
  function sig(a) { return (a.commands || []).map(c => `${c.command_id}:${c.status}:${c.attempts || 0}`).join(","); }
  function button(a) { return can("commands.send") && a.commandable ? `<button type="button" class="cmd-open">${t("cmd_controls")}</button>` : ""; }

  // -- the dialog: the devices, their actions; then one confirmation -------------------------
  document.body.insertAdjacentHTML("beforeend", `
  <dialog id="command-dialog" aria-labelledby="cmdd-title">
    <h3 id="cmdd-title">${esc(t("cmd_controls"))}</h3>
    <div id="cmdd-devices"></div>
    <p id="cmdd-ask" hidden><b id="cmdd-question"></b></p>
    <p class="error" id="cmdd-error" role="alert"></p>
    <div class="actions"><button type="button" class="primary" id="cmdd-confirm" hidden></button>
    <button type="button" id="cmdd-cancel"></button></div>
  </dialog>`);
  const d = $("#command-dialog");
  function labels() {
    $("#cmdd-title").textContent = t("cmd_controls");
    $("#cmdd-confirm").textContent = t("cmd_send");
    $("#cmdd-cancel").textContent = t("cancel");
  }
  async function open(alarmId) {
    const data = await api(`/api/alarms/${alarmId}/commands`);
    labels();
    d.dataset.id = alarmId;
    $("#cmdd-ask").hidden = true; $("#cmdd-confirm").hidden = true; $("#cmdd-error").textContent = "";
    $("#cmdd-devices").innerHTML = data.devices.length ? data.devices.map(dev => `
      <p class="cmd-device" data-device="${esc(dev.device_id)}"><b data-raw>${esc(dev.name)}</b>
        ${dev.mode !== "normal" ? `<span class="tag test">${esc(t("mode_on_" + dev.mode))}</span>` : ""}
        ${dev.actions.map(ac => {
          const locked = INVERSE.has(ac) && !data.can_restore;
          return `<button type="button" class="cmd-action" data-action="${esc(ac)}"${locked ? ` disabled title="${esc(t("cmd_needs_restore"))}"` : ""}>${esc(t("cmd_" + ac))}</button>`;
        }).join(" ")}</p>`).join("") : `<p>${esc(t("cmd_none"))}</p>`;
    d.showModal();
    $("#cmdd-cancel").focus();
  }
  $("#cmdd-devices").addEventListener("click", e => {
    const b = e.target.closest(".cmd-action"); if (!b || b.disabled) return;
    const row = b.closest(".cmd-device");
    d.dataset.device = row.dataset.device; d.dataset.action = b.dataset.action;
    $("#cmdd-question").textContent = t("cmd_confirm", {device: $("b", row).textContent, verb: t("cmd_" + b.dataset.action)});
    $("#cmdd-ask").hidden = false; $("#cmdd-confirm").hidden = false; $("#cmdd-confirm").disabled = false;
    $("#cmdd-cancel").focus();   // the safe choice has the focus
  });
  $("#cmdd-cancel").onclick = () => d.close("cancel");
  $("#cmdd-confirm").onclick = async () => {
    const b = $("#cmdd-confirm"); b.disabled = true;
    try {
      await api(`/api/alarms/${d.dataset.id}/commands`, {method: "POST", body: JSON.stringify(
        {device_id: d.dataset.device, action: d.dataset.action})});
      d.close("sent");
      toast(t("cmd_sent_toast", {verb: t("cmd_" + d.dataset.action)}));
    } catch (err) { b.disabled = false; $("#cmdd-error").textContent = err.message; }
  };
  $("#alarms").addEventListener("click", e => {
    if (!e.target.classList.contains("cmd-open")) return;
    const card = e.target.closest(".alarm");
    open(card.dataset.id).catch(err => toast(err.message, true));
  });
  return {html, sig, button};
})();
