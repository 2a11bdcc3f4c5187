/* tuneloop dashboard: charts from data attributes, keyboard shortcuts for annotation.
   No inline scripts anywhere (the CSP forbids them): pages carry their data in
   data-chart (JSON) or data-src (a URL returning JSON) on <canvas> elements. */
(function () {
  "use strict";

  var BLUE = "#3b5bdb", ORANGE = "#e8590c", GREY = "#868e96", RED = "#e03131";

  function pct(v) { return Math.round(v * 100) + "%"; }

  function base(extra) {
    var opts = {
      responsive: true, maintainAspectRatio: false, animation: false,
      interaction: { mode: "nearest", intersect: false },
      plugins: { legend: { position: "bottom", labels: { boxWidth: 12, usePointStyle: true } } }
    };
    for (var k in extra) { opts[k] = extra[k]; }
    return opts;
  }

  function satisfaction(canvas, d) {
    var sets = [
      { label: "daily", data: d.daily, showLine: false, pointRadius: 3, borderColor: GREY, backgroundColor: GREY },
      { label: "7-day rolling", data: d.rolling, spanGaps: true, tension: 0.3, pointRadius: 0, borderWidth: 2,
        borderColor: BLUE, backgroundColor: BLUE }
    ];
    if (d.fit) {
      sets.push({ label: "trend", data: d.fit, pointRadius: 0, borderDash: [6, 4], borderWidth: 1.5,
                  borderColor: ORANGE, backgroundColor: ORANGE });
    }
    return new Chart(canvas, { type: "line", data: { labels: d.labels, datasets: sets },
      options: base({ scales: { y: { min: 0, max: 1, ticks: { callback: pct } } } }) });
  }

  function traffic(canvas, d) {
    return new Chart(canvas, { type: "bar", data: { labels: d.labels, datasets: [
      { label: "interactions", data: d.interactions, backgroundColor: "rgba(59,91,219,0.7)", stack: "s" },
      { label: "errors", data: d.errors, backgroundColor: RED, stack: "e" }
    ] }, options: base({ scales: { y: { beginAtZero: true } } }) });
  }

  function points(list) { return list.map(function (p) { return { x: p[0], y: p[1] }; }); }

  function projection(canvas, d) {
    var texts = d.texts || {};
    return new Chart(canvas, { type: "scatter", data: { datasets: [
      { label: "reference (" + d.n_reference + ")", data: points(d.reference), pointRadius: 3,
        backgroundColor: "rgba(59,91,219,0.45)", borderColor: "rgba(59,91,219,0.8)", texts: texts.reference },
      { label: "current (" + d.n_current + ")", data: points(d.current), pointRadius: 3,
        backgroundColor: "rgba(232,89,12,0.45)", borderColor: "rgba(232,89,12,0.8)", texts: texts.current }
    ] }, options: base({
      interaction: { mode: "nearest", intersect: true },
      scales: { x: { title: { display: true, text: "PC1 (" + pct(d.explained_variance_ratio[0]) + " of variance)" } },
                y: { title: { display: true, text: "PC2 (" + pct(d.explained_variance_ratio[1]) + ")" } } },
      plugins: { legend: { position: "bottom" }, tooltip: { callbacks: { label: function (ctx) {
        var t = ctx.dataset.texts; return t && t[ctx.dataIndex] ? t[ctx.dataIndex] : ctx.formattedValue; } } } }
    }) });
  }

  var DRAW = { satisfaction: satisfaction, traffic: traffic, projection: projection };

  function draw(canvas, d) {
    var fn = DRAW[d.type];
    if (fn && window.Chart) { fn(canvas, d); }
  }

  function note(canvas, text) {
    var card = canvas.closest(".card");
    var el = card && card.querySelector("[data-projection-note]");
    if (el) { el.textContent = text; }
  }

  function init(root) {
    if (!root || !root.querySelectorAll) { return; }
    root.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      if (canvas.dataset.drawn) { return; }
      canvas.dataset.drawn = "1";
      try { draw(canvas, JSON.parse(canvas.dataset.chart)); } catch (e) { console.error(e); }
    });
    root.querySelectorAll("canvas[data-src]").forEach(function (canvas) {
      if (canvas.dataset.drawn) { return; }
      canvas.dataset.drawn = "1";
      fetch(canvas.dataset.src, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) { return r.json().then(function (body) { return { ok: r.ok, body: body }; }); })
        .then(function (res) {
          if (!res.ok) { note(canvas, "No projection: " + (res.body.error || "request failed")); return; }
          res.body.type = "projection";
          draw(canvas, res.body);
          note(canvas, res.body.n_reference + " reference and " + res.body.n_current +
               " current queries, embedded with " + res.body.embedder +
               "; the two axes hold " + pct(res.body.explained_variance_ratio[0] + res.body.explained_variance_ratio[1]) +
               " of the variance. Hover a point to read its query.");
        })
        .catch(function () { note(canvas, "No projection: the request failed."); });
    });
  }

  document.addEventListener("DOMContentLoaded", function () { init(document); });
  document.addEventListener("htmx:load", function (e) { init(e.target); });

  // Annotation shortcuts: 1 = A, 2 = B, 3 = equal, 4 = both bad, 0 = skip.
  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) { return; }
    if (e.target && e.target.closest && e.target.closest("input, textarea, select")) { return; }
    var button = document.querySelector('#pair button[data-key="' + e.key + '"]');
    if (button) { e.preventDefault(); button.click(); }
  });
})();
