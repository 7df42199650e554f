// The nudgeflow report page: draws a ReportData value (retention, uplift,
// P(alive), at-risk users, delivery) with Chart.js and an HTML heat map.
//
// Two modes, set by the JSON in #report-config:
//   {"mode": "static"}  the data is inlined in #report-data;
//   {"mode": "live", "endpoint": "/v1/report", "refresh_seconds": N}
//                       fetches the endpoint (same origin; with
//                       `Authorization: Bearer T` when the page URL has
//                       #token=T) and redraws every N seconds.
//
// When every chart is drawn, body gets data-rendered = the number of charts
// drawn with at least one data point, and each chart container
// (`[data-chart]`) data-points = the number of points it drew. An error
// anywhere sets body's data-error and shows the error line.
(function () {
  "use strict";

  var ALL = "*";
  var NULL_SEGMENT = "\u0000null";
  var COLORS = {
    treated: "#0969da",
    holdout: "#bc4c00",
    delivered: "#2da44e",
    failed: "#cf222e",
    other: "#afb8c1",
    rate: "#6639ba",
    bars: "#0969da",
    line: "#bc4c00",
  };
  var PALETTE = ["#0969da", "#bc4c00", "#1a7f37", "#8250df", "#bf3989", "#9a6700", "#0550ae", "#57606a"];

  var charts = [];
  var current = null;
  var errors = [];
  var fetchError = null;

  function byId(id) {
    return document.getElementById(id);
  }

  function h(tag, attrs, children) {
    var e = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        if (k === "text") e.textContent = attrs[k];
        else if (k === "className") e.className = attrs[k];
        else e.setAttribute(k, attrs[k]);
      });
    }
    (children || []).forEach(function (c) {
      if (c != null) e.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return e;
  }

  function readJson(id) {
    var e = byId(id);
    if (!e) return null;
    var text = e.textContent.trim();
    return text ? JSON.parse(text) : null;
  }

  function isNum(v) {
    return typeof v === "number" && isFinite(v);
  }

  function pct(v, digits) {
    return isNum(v) ? (v * 100).toFixed(digits == null ? 1 : digits) + "%" : "\u2013";
  }

  function pp(v) {
    if (!isNum(v)) return "\u2013";
    var s = (v * 100).toFixed(1);
    return (v > 0 ? "+" : "") + s + " pp";
  }

  function int(v) {
    return isNum(v) ? v.toLocaleString("en-US") : "\u2013";
  }

  function segKey(s) {
    return s == null ? NULL_SEGMENT : String(s);
  }

  function segLabel(key) {
    return key === NULL_SEGMENT ? "(no segment)" : key;
  }

  // --- errors -------------------------------------------------------------

  function showErrors() {
    var line = byId("error");
    var msgs = [];
    if (fetchError) msgs.push(fetchError);
    errors.forEach(function (m) {
      msgs.push(m);
    });
    if (msgs.length) {
      line.textContent = msgs.join(" \u2014 ");
      line.hidden = false;
    } else {
      line.textContent = "";
      line.hidden = true;
    }
  }

  function recordError(msg) {
    errors.push(String(msg));
    document.body.dataset.error = errors.join(" | ");
    showErrors();
  }

  window.addEventListener("error", function (ev) {
    recordError("Script error: " + (ev.message || ev.error || "unknown"));
  });
  window.addEventListener("unhandledrejection", function (ev) {
    recordError("Script error: " + (ev.reason && ev.reason.message ? ev.reason.message : ev.reason));
  });

  // --- chart containers ---------------------------------------------------

  // Empties a chart container and says "no data" in it (with a reason).
  function noData(container, why) {
    container.replaceChildren(h("p", { className: "nodata", text: "No data" + (why ? " (" + why + ")" : "") + "." }));
    container.dataset.points = "0";
    return 0;
  }

  // Counts the points Chart.js laid out: elements of the counted datasets
  // that are not skipped (null values) and sit at finite coordinates.
  function countDrawn(chart) {
    var n = 0;
    chart.data.datasets.forEach(function (ds, i) {
      if (ds.countPoints === false || !chart.isDatasetVisible(i)) return;
      var meta = chart.getDatasetMeta(i);
      meta.data.forEach(function (el, j) {
        var v = ds.data[j];
        if (v == null || el.skip) return;
        if (isNum(el.x) && isNum(el.y)) n += 1;
      });
    });
    return n;
  }

  function drawChart(container, config) {
    var wrap = h("div", { className: "canvas-wrap" });
    var canvas = h("canvas", { role: "img", "aria-label": container.id });
    wrap.appendChild(canvas);
    container.replaceChildren(wrap);
    config.options = Object.assign(
      {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        interaction: { mode: "index", intersect: false },
      },
      config.options || {}
    );
    var chart = new Chart(canvas, config);
    charts.push(chart);
    var n = countDrawn(chart);
    container.dataset.points = String(n);
    if (n === 0) return noData(container);
    return n;
  }

  // --- retention ------------------------------------------------------------

  function retentionRows(data) {
    var r = data && data.retention;
    return r && Array.isArray(r.rows) ? r.rows : [];
  }

  function maxK(rows) {
    var k = -1;
    rows.forEach(function (r) {
      if (Array.isArray(r.retained)) k = Math.max(k, r.retained.length - 1);
    });
    return k;
  }

  function matches(row, segment, group) {
    if (segment !== ALL && segKey(row.segment) !== segment) return false;
    if (group !== ALL && row.group !== group) return false;
    return true;
  }

  // Per cohort: size and retained[k] summed over the selected rows (null
  // where no selected row has a value for k).
  function cohortTotals(rows, segment, group, K) {
    var byCohort = new Map();
    rows.forEach(function (r) {
      if (!matches(r, segment, group)) return;
      var c = byCohort.get(r.cohort);
      if (!c) {
        c = { cohort: r.cohort, size: 0, retained: new Array(K + 1).fill(null) };
        byCohort.set(r.cohort, c);
      }
      c.size += isNum(r.size) ? r.size : 0;
      (r.retained || []).forEach(function (v, k) {
        if (isNum(v) && k <= K) c.retained[k] = (c.retained[k] || 0) + v;
      });
    });
    return Array.from(byCohort.values()).sort(function (a, b) {
      return a.cohort < b.cohort ? -1 : a.cohort > b.cohort ? 1 : 0;
    });
  }

  function heatColor(share) {
    var s = Math.max(0, Math.min(1, share));
    return "hsl(212, 80%, " + (97 - s * 57).toFixed(1) + "%)";
  }

  function drawHeatmap(container, data, sel) {
    var rows = retentionRows(data);
    var K = maxK(rows);
    var cohorts = cohortTotals(rows, sel.segment, sel.group, K);
    if (!cohorts.length || K < 0) return noData(container);
    var bucket = (data.retention && data.retention.bucket) || "bucket";
    var head = [h("th", { text: "Cohort (" + bucket + ")" }), h("th", { text: "Users" })];
    for (var k = 0; k <= K; k++) head.push(h("th", { text: "k=" + k }));
    var body = [];
    var points = 0;
    cohorts.forEach(function (c) {
      var tr = [h("td", { text: c.cohort }), h("td", { text: int(c.size) })];
      for (var k = 0; k <= K; k++) {
        var v = c.retained[k];
        if (v == null || !(c.size > 0)) {
          tr.push(h("td", { className: "cell future", title: v == null ? "not yet" : "empty cohort" }));
          continue;
        }
        var share = v / c.size;
        var td = h("td", {
          className: "cell",
          title: c.cohort + ", k=" + k + ": " + int(v) + " of " + int(c.size),
          text: pct(share, 0),
          "data-value": String(v),
        });
        td.style.background = heatColor(share);
        td.style.color = share > 0.55 ? "#fff" : "#1f2328";
        tr.push(td);
        points += 1;
      }
      body.push(h("tr", null, tr));
    });
    if (points === 0) return noData(container);
    container.replaceChildren(
      h("table", null, [h("thead", null, [h("tr", null, head)]), h("tbody", null, body)])
    );
    container.dataset.points = String(points);
    return points;
  }

  // Rate by k for one group, pooled over the cohorts that reached k.
  function pooledCurve(rows, segment, group, K) {
    var num = new Array(K + 1).fill(0);
    var den = new Array(K + 1).fill(0);
    rows.forEach(function (r) {
      if (!matches(r, segment, group) || !isNum(r.size)) return;
      (r.retained || []).forEach(function (v, k) {
        if (isNum(v) && k <= K) {
          num[k] += v;
          den[k] += r.size;
        }
      });
    });
    return num.map(function (n, k) {
      return den[k] > 0 ? n / den[k] : null;
    });
  }

  function drawCurves(container, data, sel) {
    var rows = retentionRows(data);
    var K = maxK(rows);
    if (K < 0) return noData(container);
    var labels = [];
    for (var k = 0; k <= K; k++) labels.push(String(k));
    var datasets = ["treated", "holdout"].map(function (g) {
      return {
        label: g === "treated" ? "Treated" : "Holdout",
        data: pooledCurve(rows, sel.segment, g, K),
        borderColor: COLORS[g],
        backgroundColor: COLORS[g],
        spanGaps: false,
        tension: 0.15,
      };
    });
    if (!datasets.some(function (d) { return d.data.some(isNum); })) return noData(container);
    var bucket = (data.retention && data.retention.bucket) || "bucket";
    return drawChart(container, {
      type: "line",
      data: { labels: labels, datasets: datasets },
      options: {
        scales: {
          x: { title: { display: true, text: "k (" + bucket + "s after the cohort's)" } },
          y: {
            min: 0,
            max: 1,
            title: { display: true, text: "retained share" },
            ticks: { callback: function (v) { return pct(v, 0); } },
          },
        },
        plugins: {
          tooltip: { callbacks: { label: function (c) { return c.dataset.label + ": " + pct(c.parsed.y); } } },
        },
      },
    });
  }

  // --- uplift -----------------------------------------------------------------

  function upliftRows(data, sel) {
    var u = data && Array.isArray(data.uplift) ? data.uplift : [];
    return u.filter(function (r) {
      return sel.segment === ALL || segKey(r.segment) === sel.segment;
    });
  }

  function drawUplift(container, data, sel) {
    var rows = upliftRows(data, sel);
    drawUpliftTable(rows);
    var ks = Array.from(new Set(rows.map(function (r) { return r.k; }).filter(isNum))).sort(function (a, b) { return a - b; });
    if (!ks.length) return noData(container);
    // Each segment keeps its colour whichever is selected.
    var all = [];
    (Array.isArray(data.uplift) ? data.uplift : []).forEach(function (r) {
      var key = segKey(r.segment);
      if (all.indexOf(key) < 0) all.push(key);
    });
    var segs = all.filter(function (key) {
      return rows.some(function (r) { return segKey(r.segment) === key; });
    });
    var datasets = [];
    segs.forEach(function (key) {
      var color = PALETTE[all.indexOf(key) % PALETTE.length];
      var at = new Map();
      rows.forEach(function (r) {
        if (segKey(r.segment) === key) at.set(r.k, r);
      });
      function series(f) {
        return ks.map(function (k) {
          var r = at.get(k);
          var v = r ? f(r) : null;
          return isNum(v) ? v : null;
        });
      }
      var lo = series(function (r) { return Array.isArray(r.ci95) ? r.ci95[0] : null; });
      var hi = series(function (r) { return Array.isArray(r.ci95) ? r.ci95[1] : null; });
      var first = datasets.length;
      datasets.push({
        label: segLabel(key) + " 95% CI low",
        data: lo,
        borderWidth: 0,
        pointRadius: 0,
        pointHitRadius: 0,
        backgroundColor: color + "22",
        fill: false,
        countPoints: false,
        band: true,
      });
      datasets.push({
        label: segLabel(key) + " 95% CI high",
        data: hi,
        borderWidth: 0,
        pointRadius: 0,
        pointHitRadius: 0,
        backgroundColor: color + "33",
        fill: first,
        countPoints: false,
        band: true,
      });
      datasets.push({
        label: segLabel(key),
        data: series(function (r) { return r.uplift; }),
        borderColor: color,
        backgroundColor: color,
        tension: 0.1,
      });
    });
    if (!datasets.some(function (d) { return !d.band && d.data.some(isNum); })) return noData(container, "no group has users");
    return drawChart(container, {
      type: "line",
      data: { labels: ks.map(String), datasets: datasets },
      options: {
        scales: {
          x: { title: { display: true, text: "k" } },
          y: {
            title: { display: true, text: "uplift (treated \u2212 holdout)" },
            ticks: { callback: function (v) { return pp(v); } },
          },
        },
        plugins: {
          legend: { labels: { filter: function (item, d) { return !d.datasets[item.datasetIndex].band; } } },
          tooltip: {
            filter: function (item) { return !item.dataset.band; },
            callbacks: { label: function (c) { return c.dataset.label + ": " + pp(c.parsed.y); } },
          },
        },
      },
    });
  }

  function drawUpliftTable(rows) {
    var box = byId("uplift-table");
    if (!rows.length) {
      box.replaceChildren();
      return;
    }
    var head = ["Segment", "k", "Treated", "rate", "Holdout", "rate", "Uplift", "95% CI"].map(function (t) {
      return h("th", { text: t });
    });
    var body = rows.map(function (r) {
      var t = r.treated || {};
      var o = r.holdout || {};
      var ci = Array.isArray(r.ci95) && isNum(r.ci95[0]) && isNum(r.ci95[1]) ? pp(r.ci95[0]) + " \u2026 " + pp(r.ci95[1]) : "\u2013";
      var up = h("td", { text: pp(r.uplift) });
      if (isNum(r.uplift)) up.className = r.uplift > 0 ? "pos" : r.uplift < 0 ? "neg" : "";
      return h("tr", null, [
        h("td", { text: segLabel(segKey(r.segment)) }),
        h("td", { text: String(r.k) }),
        h("td", { text: int(t.retained) + " / " + int(t.users) }),
        h("td", { text: pct(t.rate) }),
        h("td", { text: int(o.retained) + " / " + int(o.users) }),
        h("td", { text: pct(o.rate) }),
        up,
        h("td", { text: ci }),
      ]);
    });
    box.replaceChildren(h("table", null, [h("thead", null, [h("tr", null, head)]), h("tbody", null, body)]));
  }

  // --- churn ------------------------------------------------------------------

  function drawPAlive(container, data) {
    var p = data && data.p_alive;
    if (!p) return noData(container, "the spec has no churn model");
    var counts = Array.isArray(p.counts) ? p.counts : [];
    var edges = Array.isArray(p.edges) ? p.edges : [];
    var total = counts.reduce(function (s, c) { return s + (isNum(c) ? c : 0); }, 0);
    if (!counts.length || total === 0) return noData(container, "no active users");
    var labels = counts.map(function (_, i) {
      var lo = edges[i], hi = edges[i + 1];
      return isNum(lo) && isNum(hi) ? lo.toFixed(2) + "\u2013" + hi.toFixed(2) : String(i);
    });
    return drawChart(container, {
      type: "bar",
      data: {
        labels: labels,
        datasets: [{ label: "users", data: counts.map(function (c) { return isNum(c) ? c : null; }), backgroundColor: COLORS.bars, barPercentage: 1, categoryPercentage: 0.95 }],
      },
      options: {
        plugins: { legend: { display: false } },
        scales: {
          x: { title: { display: true, text: "P(alive)" } },
          y: { beginAtZero: true, title: { display: true, text: "users" }, ticks: { precision: 0 } },
        },
      },
    });
  }

  function drawAtRisk(container, data) {
    var a = data && data.at_risk;
    if (!Array.isArray(a)) return noData(container, "the spec has no churn model");
    if (!a.length) return noData(container);
    return drawChart(container, {
      type: "line",
      data: {
        labels: a.map(function (d) { return d.day; }),
        datasets: [{ label: "users at risk", data: a.map(function (d) { return isNum(d.users) ? d.users : null; }), borderColor: COLORS.line, backgroundColor: COLORS.line, tension: 0.1 }],
      },
      options: {
        plugins: { legend: { display: false } },
        scales: {
          x: { title: { display: true, text: "UTC day" } },
          y: { beginAtZero: true, title: { display: true, text: "users" }, ticks: { precision: 0 } },
        },
      },
    });
  }

  // --- delivery ---------------------------------------------------------------

  function counts(c) {
    var d = isNum(c.dispatched) ? c.dispatched : 0;
    var ok = isNum(c.delivered) ? c.delivered : 0;
    var bad = isNum(c.failed) ? c.failed : 0;
    var rate = isNum(c.success_rate) ? c.success_rate : d > 0 ? ok / d : null;
    return { dispatched: d, delivered: ok, failed: bad, other: Math.max(0, d - ok - bad), rate: rate };
  }

  function drawDelivery(container, data) {
    var del = (data && data.delivery) || {};
    drawDeliveryText(del);
    var channels = del.channels && typeof del.channels === "object" ? del.channels : {};
    var names = Object.keys(channels).sort();
    if (!names.length) return noData(container);
    var rows = names.map(function (n) { return counts(channels[n] || {}); });
    function col(f) { return rows.map(f); }
    return drawChart(container, {
      type: "bar",
      data: {
        labels: names.map(function (n, i) { return [n, pct(rows[i].rate)]; }),
        datasets: [
          { label: "delivered", data: col(function (r) { return r.delivered; }), backgroundColor: COLORS.delivered, stack: "a" },
          { label: "failed", data: col(function (r) { return r.failed; }), backgroundColor: COLORS.failed, stack: "a" },
          { label: "other", data: col(function (r) { return r.other; }), backgroundColor: COLORS.other, stack: "a" },
          {
            type: "line",
            label: "success rate",
            data: col(function (r) { return r.rate; }),
            yAxisID: "rate",
            borderColor: COLORS.rate,
            backgroundColor: COLORS.rate,
            showLine: false,
            pointRadius: 7,
            pointStyle: "rectRot",
            pointBorderColor: "#fff",
            pointBorderWidth: 1.5,
            // Over the bars, and whole at 100%.
            order: -1,
            clip: false,
          },
        ],
      },
      options: {
        scales: {
          x: { stacked: true },
          y: { stacked: true, beginAtZero: true, title: { display: true, text: "attempts" }, ticks: { precision: 0 } },
          rate: {
            position: "right",
            min: 0,
            max: 1,
            grid: { drawOnChartArea: false },
            title: { display: true, text: "success rate" },
            ticks: { callback: function (v) { return pct(v, 0); } },
          },
        },
        plugins: {
          tooltip: {
            callbacks: {
              label: function (c) {
                return c.dataset.label + ": " + (c.dataset.yAxisID === "rate" ? pct(c.parsed.y) : int(c.parsed.y));
              },
            },
          },
        },
      },
    });
  }

  function drawDeliveryText(del) {
    var n = del.notifications || {};
    byId("notifications").textContent = isNum(n.total)
      ? "Notifications: " + int(n.total) + ", of which " + int(n.succeeded) + " succeeded" +
        (n.total > 0 && isNum(n.succeeded) ? " (" + pct(n.succeeded / n.total) + ")." : ".")
      : "";
    var rules = del.rules && typeof del.rules === "object" ? del.rules : {};
    var names = Object.keys(rules).sort();
    var box = byId("rules-table");
    byId("rules-box").hidden = !names.length;
    if (!names.length) {
      box.replaceChildren();
      return;
    }
    var head = ["Rule", "Dispatched", "Delivered", "Failed", "Other", "Success rate"].map(function (t) {
      return h("th", { text: t });
    });
    var body = names.map(function (name) {
      var r = counts(rules[name] || {});
      return h("tr", null, [
        h("td", { text: name }),
        h("td", { text: int(r.dispatched) }),
        h("td", { text: int(r.delivered) }),
        h("td", { text: int(r.failed) }),
        h("td", { text: int(r.other) }),
        h("td", { text: pct(r.rate) }),
      ]);
    });
    box.replaceChildren(h("table", null, [h("thead", null, [h("tr", null, head)]), h("tbody", null, body)]));
  }

  // --- controls and the whole page ---------------------------------------------

  function selection() {
    return { segment: byId("segment").value || ALL, group: byId("group").value || ALL };
  }

  function fillSegments(data) {
    var select = byId("segment");
    var keep = select.value;
    var keys = [];
    retentionRows(data).forEach(function (r) {
      var k = segKey(r.segment);
      if (keys.indexOf(k) < 0) keys.push(k);
    });
    (Array.isArray(data && data.uplift) ? data.uplift : []).forEach(function (r) {
      var k = segKey(r.segment);
      if (keys.indexOf(k) < 0) keys.push(k);
    });
    keys.sort(function (a, b) {
      if (a === NULL_SEGMENT) return -1;
      if (b === NULL_SEGMENT) return 1;
      return a < b ? -1 : a > b ? 1 : 0;
    });
    var options = [h("option", { value: ALL, text: "All segments" })];
    keys.forEach(function (k) {
      options.push(h("option", { value: k, text: segLabel(k) }));
    });
    select.replaceChildren.apply(select, options);
    select.value = keys.indexOf(keep) >= 0 ? keep : ALL;
  }

  var DRAWERS = [
    ["chart-heatmap", drawHeatmap],
    ["chart-curves", drawCurves],
    ["chart-uplift", drawUplift],
    ["chart-palive", drawPAlive],
    ["chart-atrisk", drawAtRisk],
    ["chart-delivery", drawDelivery],
  ];

  function render(data) {
    current = data;
    errors = [];
    delete document.body.dataset.error;
    showErrors();
    charts.forEach(function (c) { c.destroy(); });
    charts = [];

    var title = data && typeof data.title === "string" && data.title ? data.title : "nudgeflow report";
    byId("title").textContent = title;
    document.title = title + " \u2014 nudgeflow report";
    byId("as-of").textContent = (data && data.as_of) || "\u2013";

    fillSegments(data);
    var sel = selection();
    var rendered = 0;
    DRAWERS.forEach(function (d) {
      var container = byId(d[0]);
      try {
        if (d[1](container, data || {}, sel) > 0) rendered += 1;
      } catch (e) {
        noData(container, "could not draw");
        recordError(d[0] + ": " + (e && e.message ? e.message : e));
      }
    });
    document.body.dataset.rendered = String(rendered);
  }

  function rerender() {
    if (current !== null) render(current);
  }

  function tokenFromHash() {
    var m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
    return m ? decodeURIComponent(m[1]) : null;
  }

  function live(config) {
    var endpoint = config.endpoint || "/v1/report";
    var every = Math.max(1, config.refresh_seconds || 5);
    byId("updated").textContent = "(refreshing every " + every + " s)";
    function poll() {
      var headers = { Accept: "application/json" };
      var token = tokenFromHash();
      if (token) headers.Authorization = "Bearer " + token;
      fetch(endpoint, { headers: headers, cache: "no-store", credentials: "same-origin" })
        .then(function (resp) {
          if (resp.ok) return resp.json();
          return resp.text().then(function (body) {
            var why = body;
            try {
              why = JSON.parse(body).error || body;
            } catch (e) {
              /* not JSON: the body as it is */
            }
            throw new Error("HTTP " + resp.status + (why ? ": " + why : ""));
          });
        })
        .then(
          function (data) {
            fetchError = null;
            delete document.body.dataset.fetchError;
            render(data);
            byId("updated").textContent =
              "(fetched " + new Date().toISOString().replace(/\.\d+Z$/, "Z") + ", refreshing every " + every + " s)";
          },
          function (err) {
            fetchError =
              "Could not fetch " + endpoint + ": " + (err && err.message ? err.message : err) +
              (current !== null ? " (showing the last data fetched)" : "") + "; retrying in " + every + " s.";
            document.body.dataset.fetchError = fetchError;
            showErrors();
          }
        )
        .finally(function () {
          setTimeout(poll, every * 1000);
        });
    }
    poll();
  }

  function main() {
    byId("segment").addEventListener("change", rerender);
    byId("group").addEventListener("change", rerender);
    var config = readJson("report-config") || { mode: "static" };
    if (config.mode === "live") {
      live(config);
    } else {
      render(readJson("report-data"));
    }
  }

  try {
    main();
  } catch (e) {
    recordError(e && e.message ? e.message : e);
  }
})();
