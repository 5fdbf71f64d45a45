// lungaudit report: gallery filters and review decisions. No network, no dependencies.
(function () {
  "use strict";
  var meta = JSON.parse(document.getElementById("report-meta").textContent);
  var cards = Array.prototype.slice.call(document.querySelectorAll(".card"));
  var fClass = document.getElementById("filter-class");
  var fRegion = document.getElementById("filter-region");
  var fReason = document.getElementById("filter-reason");
  var visibleOut = document.getElementById("visible-count");
  var reviewedOut = document.getElementById("reviewed-count");
  var decisions = {};  // key -> {decision, new_label}

  // Decisions survive a reload of the same report (same audit), when the browser allows storage.
  function load() {
    try { decisions = JSON.parse(window.localStorage.getItem(meta.storage_key) || "{}") || {}; }
    catch (e) { decisions = {}; }
  }
  function save() {
    try { window.localStorage.setItem(meta.storage_key, JSON.stringify(decisions)); } catch (e) { /* file:// may forbid */ }
  }

  function applyFilters() {
    var c = fClass.value, r = fRegion.value, why = fReason.value, n = 0;
    cards.forEach(function (card) {
      var ok = (c === "*" || card.dataset.class === c) &&
               (r === "*" || card.dataset.region === r) &&
               (why === "*" || card.dataset.reasons.split(" ").indexOf(why) >= 0);
      card.hidden = !ok;
      if (ok) { n += 1; }
    });
    visibleOut.textContent = String(n);
  }

  function paint(card) {
    var d = decisions[card.dataset.key];
    card.classList.remove("decided-keep", "decided-exclude", "decided-relabel", "invalid");
    if (d) { card.classList.add("decided-" + d.decision); }
    reviewedOut.textContent = String(Object.keys(decisions).length);
  }

  function readCard(card) {
    var checked = card.querySelector("input[type=radio]:checked");
    var sel = card.querySelector("select.relabel");
    if (!checked) { delete decisions[card.dataset.key]; }
    else {
      decisions[card.dataset.key] = {
        decision: checked.value,
        new_label: checked.value === "relabel" ? sel.value : ""
      };
    }
    save();
    paint(card);
  }

  cards.forEach(function (card) {
    var sel = card.querySelector("select.relabel");
    card.querySelectorAll("input[type=radio]").forEach(function (el) {
      el.addEventListener("change", function () { readCard(card); });
    });
    sel.addEventListener("change", function () {
      // Picking a new class is itself the decision to relabel.
      if (sel.value) { card.querySelector("input[value=relabel]").checked = true; }
      readCard(card);
    });
  });

  function csvField(s) {
    s = String(s);
    return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }

  function buildCsv() {
    var lines = ["key,decision,new_label"], bad = [];
    cards.forEach(function (card) {
      var d = decisions[card.dataset.key];
      if (!d) { return; }
      if (d.decision === "relabel" && meta.class_names.indexOf(d.new_label) < 0) {
        bad.push(card); return;
      }
      lines.push([csvField(card.dataset.key), d.decision, csvField(d.new_label)].join(","));
    });
    return { text: lines.join("\n") + "\n", bad: bad };
  }

  document.getElementById("download").addEventListener("click", function () {
    var out = buildCsv();
    if (out.bad.length) {
      out.bad.forEach(function (card) { card.classList.add("invalid"); card.hidden = false; });
      out.bad[0].scrollIntoView({ block: "center" });
      window.alert(out.bad.length + " relabel decision(s) have no new class selected.");
      return;
    }
    var url = URL.createObjectURL(new Blob([out.text], { type: "text/csv" }));
    var a = document.createElement("a");
    a.href = url; a.download = "decisions.csv";
    document.body.appendChild(a); a.click(); document.body.removeChild(a);
    setTimeout(function () { URL.revokeObjectURL(url); }, 1000);
  });

  document.getElementById("clear-decisions").addEventListener("click", function () {
    if (!window.confirm("Forget all review decisions in this report?")) { return; }
    decisions = {};
    save();
    cards.forEach(function (card) {
      card.querySelectorAll("input[type=radio]").forEach(function (el) { el.checked = false; });
      card.querySelector("select.relabel").value = "";
      paint(card);
    });
  });

  [fClass, fRegion, fReason].forEach(function (el) { el.addEventListener("change", applyFilters); });
  load();
  cards.forEach(function (card) {
    var d = decisions[card.dataset.key];
    if (d) {
      var radio = card.querySelector("input[value=" + d.decision + "]");
      if (radio) { radio.checked = true; }
      if (d.decision === "relabel") { card.querySelector("select.relabel").value = d.new_label; }
    }
    paint(card);
  });
  applyFilters();
})();
