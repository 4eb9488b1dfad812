"use strict";
// The households page (住户): find any household by its address and set or end its care state
// (外出 / 住院 / 有人陪护) without an alarm, as staff do when a resident phones ("I'm at my
// daughter's until Friday"). It reuses the board's care dialog (console.js openCare) and
// GET /api/households, GET /api/care, PUT/DELETE /api/households/{id}/care. The board header's
// care counts (外出 2) open this page filtered to that state. Its tab and section are added
// here, so console.html and pages.js stay as they are.
window.Households = (function () {
  let households = null;
  const b = document.createElement("button");
  Object.assign(b.dataset, {view: "households", perm: "households.read", i18n: "nav_households"});
  b.className = "tab"; b.hidden = true; b.textContent = t("nav_households");
  $("#nav").insertBefore(b, $('#nav [data-view="admin"]'));
  $("#app").insertAdjacentHTML("beforeend", `
  <section id="view-households" class="view" hidden>
    <h3 data-i18n="hh_title"></h3>
    <div class="filters">
      <label><span data-i18n="hh_search"></span><input type="search" id="hh-search" maxlength="100" data-i18n-placeholder="hh_search_hint"></label>
      <label><span data-i18n="care_state"></span><select id="hh-care">
        <option value="" data-i18n="hh_any"></option><option value="any" data-i18n="hh_in_care"></option>
        <option value="away" data-i18n="care_away"></option><option value="hospital" data-i18n="care_hospital"></option>
        <option value="carer" data-i18n="care_carer"></option></select></label>
      <span class="hint" id="hh-count"></span>
    </div>
    <div id="hh-list" class="table-wrap"></div>
  </section>`);
  $$("#view-households [data-i18n]").forEach(e => { e.textContent = t(e.dataset.i18n); });
  $$("#view-households [data-i18n-placeholder]").forEach(e => { e.placeholder = t(e.dataset.i18nPlaceholder); });

  const raw = s => s ? `<span data-raw>${esc(s)}</span>` : "";
  // what staff type: an address in part ("7号101", "7 号 101"), or a household's id
  const norm = s => String(s || "").toLowerCase().replace(/\s+/g, "");
  function shown() {
    const q = norm($("#hh-search").value), state = $("#hh-care").value;
    return households.filter(h => {
      const c = C.care.get(h.id);
      if (state === "any" ? !c : state && (!c || c.state !== state)) return false;
      return !q || norm(h.address).includes(q) || norm(h.id).includes(q) || norm(h.grid && h.grid.name).includes(q);
    });
  }
  function row(h) {
    const act = can("alarms.act") ? `<button type="button" class="care-btn link" data-household="${esc(h.id)}">${esc(t("care_set_btn"))}</button>` : "";
    return `<tr class="hh-row" data-household="${esc(h.id)}"><td><b data-raw title="${esc(h.id)}">${esc(h.address)}</b>${h.lives_alone ? ` <span class="tag">${esc(t("lives_alone"))}</span>` : ""}</td>
      <td>${h.grid ? raw(h.grid.name) : raw(h.grid_cell)}</td><td class="hh-care">${careTag(h.id)}</td><td>${act}</td></tr>`;
  }
  function draw() {
    if (!households) return;
    const list = shown();
    $("#hh-count").textContent = t("hh_count", {n: list.length, total: households.length});
    $("#hh-list").innerHTML = list.length ? `<table class="grid households"><thead><tr><th>${esc(t("f_household"))}</th><th>${esc(t("grid"))}</th><th>${esc(t("care_state"))}</th><th></th></tr></thead>
      <tbody>${list.map(row).join("")}</tbody></table>` : `<p class="hint">${esc(t("hh_none"))}</p>`;
  }
  async function page() {
    const [data] = await Promise.all([households ? null : api("/api/households"), loadCare()]);
    if (data) households = data.households;
    draw();
  }
  $("#hh-search").addEventListener("input", draw);
  $("#hh-care").onchange = draw;
  $("#hh-list").addEventListener("click", e => {
    const btn = e.target.closest(".care-btn"); if (!btn) return;
    const h = households.find(x => x.id === btn.dataset.household);
    openCare(btn.dataset.household, h && h.address);
  });
  document.addEventListener("care-changed", () => { if (C.view === "households") draw(); });
  // the board header's care counts: the households in that state
  $("#board-summary").addEventListener("click", e => {
    const p = e.target.closest(".pill.care[data-care]"); if (!p) return;
    $("#hh-search").value = ""; $("#hh-care").value = p.dataset.care;
    show("households");
  });

  const pagesShow = Pages.show;
  Pages.show = view => { if (view === "households") page().catch(err => toast(err.message, true)); else pagesShow(view); };
  return {page};
})();
