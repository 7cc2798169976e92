(function () {
  "use strict";
  var table = document.getElementById("guest-table");
  var form = document.getElementById("filters");
  if (!table || !form) { return; }
  var rows = Array.prototype.slice.call(table.tBodies[0].rows);
  var meta = rows.map(function (tr) {
    return {
      tr: tr,
      name: tr.getAttribute("data-name"),
      readiness: tr.getAttribute("data-readiness"),
      os: tr.getAttribute("data-os"),
      groups: JSON.parse(tr.getAttribute("data-groups") || "[]"),
      checks: JSON.parse(tr.getAttribute("data-checks") || "[]"),
      section: document.getElementById("g-" + tr.getAttribute("data-idx"))
    };
  });
  var q = document.getElementById("f-search"), fr = document.getElementById("f-readiness"),
      fo = document.getElementById("f-os"), fg = document.getElementById("f-group"),
      fc = document.getElementById("f-check"), count = document.getElementById("f-count");

  function apply() {
    var text = q.value.trim().toLowerCase(), r = fr.value, os = fo.value, grp = fg ? fg.value : "", chk = fc.value;
    var shown = 0;
    meta.forEach(function (m) {
      var ok = (!text || m.name.indexOf(text) !== -1) && (!r || m.readiness === r) && (!os || m.os === os) &&
               (!grp || m.groups.indexOf(grp) !== -1 || (grp === "(no group)" && !m.groups.length)) &&
               (!chk || m.checks.indexOf(chk) !== -1);
      m.tr.hidden = !ok;
      if (m.section) { m.section.hidden = !ok; }
      if (ok) { shown += 1; }
    });
    count.textContent = shown + " of " + meta.length + " guests shown";
    document.body.classList.toggle("filtered", shown !== meta.length);
  }
  form.addEventListener("input", apply);
  form.addEventListener("change", apply);
  form.addEventListener("submit", function (e) { e.preventDefault(); apply(); });
  form.addEventListener("reset", function () { setTimeout(apply, 0); });
  form.hidden = false;

  // links from the dashboard and the per-check view: "show these guests"
  document.addEventListener("click", function (e) {
    var a = e.target.closest ? e.target.closest("a[data-filter-check], a[data-filter-readiness]") : null;
    if (!a) { return; }
    form.reset();
    if (a.hasAttribute("data-filter-check")) { fc.value = a.getAttribute("data-filter-check"); }
    if (a.hasAttribute("data-filter-readiness")) { fr.value = a.getAttribute("data-filter-readiness"); }
    apply();
  });

  // sortable columns: a button in each header, aria-sort tells assistive technology
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  heads.forEach(function (th, col) {
    if (!th.hasAttribute("data-sort")) { return; }
    var b = document.createElement("button");
    b.type = "button";
    b.className = "sort";
    b.textContent = th.textContent;
    th.textContent = "";
    th.appendChild(b);
    b.addEventListener("click", function () {
      var asc = th.getAttribute("aria-sort") !== "ascending";
      heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var numeric = th.getAttribute("data-sort") === "num";
      var keyed = rows.map(function (tr, i) {
        var cell = tr.cells[col], v = cell.getAttribute("data-v");
        if (v === null) { v = cell.textContent.trim().toLowerCase(); }
        return {tr: tr, v: numeric ? parseFloat(v) || 0 : v, i: i};
      });
      keyed.sort(function (a, b) {
        var c = a.v < b.v ? -1 : a.v > b.v ? 1 : a.i - b.i;
        return asc ? c : -c;
      });
      var body = table.tBodies[0];
      keyed.forEach(function (k) { body.appendChild(k.tr); });
    });
  });

  // printing: every guest's findings are printed (passes stay one line)
  var opened = [];
  window.addEventListener("beforeprint", function () {
    opened = Array.prototype.filter.call(document.querySelectorAll("details.print-open:not([open])"), function (d) {
      d.open = true;
      return true;
    });
  });
  window.addEventListener("afterprint", function () {
    opened.forEach(function (d) { d.open = false; });
    opened = [];
  });
  apply();
}());
