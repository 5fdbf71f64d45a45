// lungaudit report: the flagged-image gallery, its filters, paging and review decisions.
// No network, no dependencies. The cards are built a page at a time from the JSON data block
// (#gallery-data, worst first), so a report with thousands of flagged images parses one JSON string
// and keeps one page of cards in the DOM. Filters, counts and decisions work on the whole data set,
// not on the page. Data-derived strings reach the page only through textContent, attribute setters
// and option values, never innerHTML, so no file name or class label can become markup.
//
// This script runs before the parser has reached most thumbnails (#gallery-thumbs-rest follows it):
// the first page is drawn from #gallery-thumbs-first at once, and cards drawn before the rest arrive
// get their pictures at DOMContentLoaded.
(function () {
  "use strict";
  function byId(id) { return document.getElementById(id); }
  function readJson(id) { var e = byId(id); return e ? JSON.parse(e.textContent) : []; }

  var meta = readJson("report-meta");
  var rows = readJson("gallery-data");
  var thumbs = readJson("gallery-thumbs-first");  // thumbs[i]: data URI of rows[i], null if none
  var thumbsComplete = false;
  // Maps keyed by image path have no prototype, so no path (not even "__proto__") can clash with one.
  var known = Object.create(null);  // key -> row index
  rows.forEach(function (r, i) { known[r.key] = i; });

  var el = {
    cards: byId("gallery-cards"), visible: byId("visible-count"), reviewed: byId("reviewed-count"),
    fClass: byId("filter-class"), fRegion: byId("filter-region"), fReason: byId("filter-reason"),
    size: byId("page-size"), pagers: Array.prototype.slice.call(document.querySelectorAll(".pager"))
  };
  var state = { page: 0, shown: [] };  // shown: indices of the rows passing the filters, in order
  var DECISIONS = ["keep", "exclude", "relabel"];
  var decisions = Object.create(null);  // key -> {decision, new_label}
  var invalid = Object.create(null);    // key -> true: relabel without a class, found when downloading

  // ------------------------------------------------------------------ decisions in localStorage
  // Decisions survive a reload of the same report (same audit), when the browser allows storage.
  function load() {
    var stored = {};
    try { stored = JSON.parse(window.localStorage.getItem(meta.storage_key) || "{}") || {}; }
    catch (e) { stored = {}; }
    Object.keys(stored).forEach(function (k) {  // only well-formed decisions on images of this report
      var d = stored[k];
      if (k in known && d && DECISIONS.indexOf(d.decision) >= 0 && typeof d.new_label === "string") {
        decisions[k] = { decision: d.decision, new_label: d.new_label };
      }
    });
  }
  function save() {
    try { window.localStorage.setItem(meta.storage_key, JSON.stringify(decisions)); } catch (e) { /* file:// may forbid */ }
  }

  // ------------------------------------------------------------------ filters and paging
  function chosen(sel) { return sel.selectedIndex <= 0 ? null : sel.value; }  // null: "all"

  function filterRows() {
    var c = chosen(el.fClass), g = chosen(el.fRegion), why = chosen(el.fReason);
    state.shown = [];
    rows.forEach(function (r, i) {
      if ((c === null || r.pred === c) && (g === null || r.region === g) &&
          (why === null || r.reasons.indexOf(why) >= 0)) { state.shown.push(i); }
    });
    el.visible.textContent = String(state.shown.length);
  }

  function pageSize() { return Math.max(1, parseInt(el.size.value, 10) || 48); }
  function pageCount() { return Math.max(1, Math.ceil(state.shown.length / pageSize())); }

  function paintPagers() {
    var n = pageCount(), from = state.page * pageSize();
    var to = Math.min(state.shown.length, from + pageSize());
    el.pagers.forEach(function (p) {
      p.querySelector(".page-input").value = String(state.page + 1);
      p.querySelector(".page-input").max = String(n);
      p.querySelector(".page-count").textContent = String(n);
      p.querySelector(".page-range").textContent = state.shown.length ? "images " + (from + 1) + "\u2013" + to : "";
      p.querySelector("[data-go=first]").disabled = p.querySelector("[data-go=prev]").disabled = state.page === 0;
      p.querySelector("[data-go=next]").disabled = p.querySelector("[data-go=last]").disabled = state.page >= n - 1;
      p.hidden = n <= 1 && p.id === "pager-bottom";
    });
  }

  function render() {
    state.page = Math.min(Math.max(0, state.page), pageCount() - 1);
    var from = state.page * pageSize(), frag = document.createDocumentFragment();
    state.shown.slice(from, from + pageSize()).forEach(function (i) { frag.appendChild(card(i)); });
    el.cards.replaceChildren(frag);
    paintPagers();
    performance.mark("gallery-rendered");  // timing for scripts/bench_report.py (a no-op otherwise)
  }

  function goTo(page, scroll) {
    state.page = page;
    render();
    if (scroll) { byId("gallery").scrollIntoView({ block: "start" }); }
  }

  // ------------------------------------------------------------------ one card
  function node(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function num(v, digits) { return v === null || v === undefined ? "\u2014" : Number(v).toFixed(digits); }
  function orDash(v) { return v ? v : "\u2014"; }

  function picture(r, thumb) {
    if (thumb === undefined) { return node("div", "placeholder", "loading\u2026"); }  // not parsed yet
    if (!thumb) { return node("div", "placeholder", r.missing || "no overlay"); }
    var img = node("img");
    img.src = thumb;
    img.alt = "Grad-CAM overlay of " + r.name;
    img.decoding = "async";
    if (!r.full) {  // the thumbnail survived but the full overlay is gone
      var box = node("div", "thumb");
      box.appendChild(img);
      box.appendChild(node("span", "note", r.missing));
      return box;
    }
    var a = node("a", "thumb");
    a.href = r.full;  // relative, percent-encoded by the report writer
    a.target = "_blank";
    a.rel = "noopener";
    a.title = "open the full-size overlay";
    a.appendChild(img);
    return a;
  }

  function marker(r) {
    // A probable burned-in marker (its box) and whether the heatmap's hotspot overlaps it.
    var dd = node("dd", "", r.on_marker ? "on hotspot" : r.marker_box ? "off hotspot" : "none found");
    if (r.marker_box) { dd.appendChild(node("span", "muted", " [" + r.marker_box.join(" ") + "]")); }
    return dd;
  }

  function reasons(r) {
    var dd = node("dd");
    if (!r.reasons.length) { dd.textContent = "\u2014"; }
    r.reasons.forEach(function (x) {
      var b = node("span", "badge", meta.reason_text[x] || x);
      b.dataset.reason = x;
      dd.appendChild(b);
    });
    return dd;
  }

  function details(r) {
    var dl = node("dl"), wrong = r.label !== null && r.label !== r.pred;
    var items = [  // short labels: the card's text column is about 240 px wide
      ["pred", node("dd", wrong ? "wrong" : "", r.pred + " (" + num(r.prob, 2) + ")")],
      ["true", node("dd", "", orDash(r.label))],
      ["masked", node("dd", "", r.pred_masked ? r.pred_masked + " (" + num(r.prob_masked, 2) + ")" : "\u2014")],
      ["E_in", node("dd", "", num(r.e_in, 2) + " (tolerant " + num(r.e_in_tol, 2) + ")")],
      ["E_out", node("dd", "", num(r.e_out_tol, 2) + " (tolerant)")],
      ["region", node("dd", "", orDash(r.region))],
      ["marker", marker(r)],
      ["source", node("dd", "", orDash(r.source))],
      ["reasons", reasons(r)]
    ];
    items.forEach(function (it) { dl.appendChild(node("dt", "", it[0])); dl.appendChild(it[1]); });
    return dl;
  }

  function review(r, rank) {
    var fs = node("fieldset", "decision"), d = decisions[r.key];
    fs.appendChild(node("legend", "", "review"));
    DECISIONS.forEach(function (v) {
      var label = node("label"), input = node("input");
      input.type = "radio"; input.name = "d" + rank; input.value = v;
      input.checked = !!d && d.decision === v;
      label.appendChild(input);
      label.appendChild(document.createTextNode(" " + v));
      fs.appendChild(label);
    });
    var sel = node("select", "relabel");
    sel.setAttribute("aria-label", "new class");
    sel.appendChild(new Option("relabel as\u2026", ""));
    meta.class_names.forEach(function (c) { sel.appendChild(new Option(c, c)); });
    sel.value = d && d.decision === "relabel" ? d.new_label : "";
    fs.appendChild(sel);
    return fs;
  }

  function thumbOf(i) { return i < thumbs.length || thumbsComplete ? thumbs[i] : undefined; }

  function card(i) {
    var r = rows[i], rank = i + 1, art = node("article", "card");
    art.dataset.key = r.key; art.dataset.class = r.pred; art.dataset.label = r.label || "";
    art.dataset.region = r.region; art.dataset.reasons = r.reasons.join(" ");
    art.dataset.index = String(i);
    if (thumbOf(i) === undefined) { art.dataset.pending = ""; }
    art.appendChild(picture(r, thumbOf(i)));
    var body = node("div", "body"), title = node("div", "title");
    title.title = r.key;
    title.appendChild(node("span", "rank", "#" + rank));
    title.appendChild(document.createTextNode(" " + r.name));
    body.appendChild(title);
    body.appendChild(details(r));
    art.appendChild(body);
    art.appendChild(review(r, rank));
    paint(art);
    return art;
  }

  function paint(art) {
    var d = decisions[art.dataset.key];
    art.classList.remove("decided-keep", "decided-exclude", "decided-relabel", "invalid");
    if (d) { art.classList.add("decided-" + d.decision); }
    if (invalid[art.dataset.key]) { art.classList.add("invalid"); }
  }

  function countReviewed() { el.reviewed.textContent = String(Object.keys(decisions).length); }

  // ------------------------------------------------------------------ reading a decision
  function readCard(art) {
    var checked = art.querySelector("input[type=radio]:checked");
    var sel = art.querySelector("select.relabel"), key = art.dataset.key;
    delete invalid[key];
    if (!checked) { delete decisions[key]; }
    else { decisions[key] = { decision: checked.value, new_label: checked.value === "relabel" ? sel.value : "" }; }
    save();
    paint(art);
    countReviewed();
  }

  // One delegated listener for every card on every page (cards come and go with paging).
  el.cards.addEventListener("change", function (ev) {
    var art = ev.target.closest("article.card");
    if (!art) { return; }
    if (ev.target.matches("select.relabel") && ev.target.value) {
      art.querySelector("input[value=relabel]").checked = true;  // picking a class is the decision to relabel
    }
    readCard(art);
  });

  // ------------------------------------------------------------------ decisions.csv
  function csvField(s) {
    s = String(s);
    return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }

  function buildCsv() {  // every decision on any page, in gallery order
    var lines = ["key,decision,new_label"], bad = [];
    rows.forEach(function (r) {
      var d = decisions[r.key];
      if (!d) { return; }
      if (d.decision === "relabel" && meta.class_names.indexOf(d.new_label) < 0) { bad.push(r.key); return; }
      lines.push([csvField(r.key), d.decision, csvField(d.new_label)].join(","));
    });
    return { text: lines.join("\n") + "\n", bad: bad };
  }

  function showRow(key) {  // bring one image into view: clear filters that hide it, open its page
    var i = known[key];
    if (state.shown.indexOf(i) < 0) {
      [el.fClass, el.fRegion, el.fReason].forEach(function (s) { s.selectedIndex = 0; });
      filterRows();
    }
    goTo(Math.floor(state.shown.indexOf(i) / pageSize()), false);
    var art = el.cards.querySelector("article.card:nth-child(" + (state.shown.indexOf(i) % pageSize() + 1) + ")");
    if (art) { art.scrollIntoView({ block: "center" }); }
  }

  byId("download").addEventListener("click", function () {
    var out = buildCsv();
    if (out.bad.length) {
      out.bad.forEach(function (k) { invalid[k] = true; });
      showRow(out.bad[0]);
      window.alert(out.bad.length + " relabel decision(s) have no new class selected.");
      return;
    }
    var url = URL.createObjectURL(new Blob([out.text], { type: "text/csv" }));
    var a = document.createElement("a");
    a.href = url; a.download = "decisions.csv";
    document.body.appendChild(a); a.click(); document.body.removeChild(a);
    setTimeout(function () { URL.revokeObjectURL(url); }, 1000);
  });

  byId("clear-decisions").addEventListener("click", function () {
    if (!window.confirm("Forget all review decisions in this report?")) { return; }
    decisions = Object.create(null); invalid = Object.create(null);
    save();
    countReviewed();
    render();
  });

  // ------------------------------------------------------------------ wiring
  [el.fClass, el.fRegion, el.fReason].forEach(function (s) {
    s.addEventListener("change", function () {
      performance.mark("gallery-filter");  // with "gallery-rendered": the filter's cost, for bench_report.py
      filterRows();
      goTo(0, false);
    });
  });
  el.size.addEventListener("change", function () { goTo(0, false); });
  el.pagers.forEach(function (p) {
    var bottom = p.id === "pager-bottom";  // paging from below jumps back to the top of the gallery
    p.addEventListener("click", function (ev) {
      var go = ev.target.closest("[data-go]");
      if (!go) { return; }
      var to = { first: 0, prev: state.page - 1, next: state.page + 1, last: pageCount() - 1 }[go.dataset.go];
      goTo(to, bottom);
    });
    p.querySelector(".page-input").addEventListener("change", function (ev) {
      goTo((parseInt(ev.target.value, 10) || 1) - 1, bottom);
    });
  });

  // The rest of the thumbnails: give the cards already drawn their pictures.
  document.addEventListener("DOMContentLoaded", function () {
    thumbs = thumbs.concat(readJson("gallery-thumbs-rest"));
    thumbsComplete = true;
    el.cards.querySelectorAll("article.card[data-pending]").forEach(function (art) {
      var i = Number(art.dataset.index);
      art.replaceChild(picture(rows[i], thumbOf(i)), art.firstChild);
      delete art.dataset.pending;
    });
  });

  load();
  countReviewed();
  filterRows();
  render();
})();
