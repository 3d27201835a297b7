// The dashboard's behaviour: draw the charts whose data each <figure data-chart='{json}'>
// carries (uPlot; a scatter on a canvas), draw again what htmx swaps in, and two small form
// helpers. No build step: plain ES2017.
(function () {
  "use strict";

  // Tableau 10: ten colours told apart at a glance (a probe and its control share one).
  var PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948",
                 "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];
  var drawn = [];   // [{figure, plot}] of the charts on the page

  function chartOptions(chart, width) {
    return {
      title: chart.title,
      width: width,
      height: 300,
      scales: { x: { time: false }, y: chart.y_log ? { distr: 3, log: 10 } : {} },
      axes: [{ label: chart.x_label }, { label: chart.y_label }],
      series: [{ label: chart.x_label }].concat(chart.series.map(function (s) {
        return {
          label: s.label,
          stroke: PALETTE[s.group % PALETTE.length],
          width: s.width,
          dash: s.dashed ? [6, 4] : undefined,
          spanGaps: true,
          points: { show: chart.x.length <= 40 },
        };
      })),
    };
  }

  // A scatter of points coloured by label, on a canvas of its own (uPlot draws lines).
  function scatterPlot(figure, chart) {
    var width = figure.clientWidth || 800, height = 380, left = 56, right = 90, top = 30, bottom = 44;
    var ratio = window.devicePixelRatio || 1;
    var canvas = document.createElement("canvas");
    canvas.width = width * ratio;
    canvas.height = height * ratio;
    canvas.style.width = width + "px";
    canvas.style.height = height + "px";
    var ctx = canvas.getContext("2d");
    ctx.scale(ratio, ratio);
    var range = function (values) {
      var lo = Math.min.apply(null, values), hi = Math.max.apply(null, values);
      var margin = hi > lo ? (hi - lo) * 0.04 : 1;   // no point on the frame
      return [lo - margin, hi + margin];
    };
    var xr = range(chart.x), yr = range(chart.y);
    var px = function (v) { return left + (v - xr[0]) / (xr[1] - xr[0]) * (width - left - right); };
    var py = function (v) { return height - bottom - (v - yr[0]) / (yr[1] - yr[0]) * (height - top - bottom); };
    ctx.font = "bold 14px system-ui, sans-serif";
    ctx.fillStyle = "#1d2330";
    ctx.textAlign = "center";
    ctx.fillText(chart.title, width / 2, 18);
    ctx.strokeStyle = "#d9dde5";
    ctx.strokeRect(left, top, width - left - right, height - top - bottom);
    ctx.font = "12px system-ui, sans-serif";
    ctx.fillText(chart.x_label, left + (width - left - right) / 2, height - 12);
    ctx.save();
    ctx.translate(16, top + (height - top - bottom) / 2);
    ctx.rotate(-Math.PI / 2);
    ctx.fillText(chart.y_label, 0, 0);
    ctx.restore();
    var seen = {};
    ctx.globalAlpha = 0.7;
    chart.x.forEach(function (x, i) {
      var label = chart.labels ? chart.labels[i] : 0;
      seen[label] = true;
      ctx.fillStyle = PALETTE[((label % PALETTE.length) + PALETTE.length) % PALETTE.length];
      ctx.beginPath();
      ctx.arc(px(x), py(chart.y[i]), 2.2, 0, 2 * Math.PI);
      ctx.fill();
    });
    ctx.globalAlpha = 1;
    if (chart.labels) {
      ctx.textAlign = "left";
      Object.keys(seen).map(Number).sort(function (a, b) { return a - b; }).forEach(function (label, row) {
        ctx.fillStyle = PALETTE[((label % PALETTE.length) + PALETTE.length) % PALETTE.length];
        ctx.fillRect(width - right + 16, top + row * 18, 10, 10);
        ctx.fillStyle = "#1d2330";
        ctx.fillText(String(label), width - right + 32, top + row * 18 + 9);
      });
    }
    figure.appendChild(canvas);
    return { destroy: function () { canvas.remove(); }, setSize: function () {} };
  }

  function forget(root) {
    drawn = drawn.filter(function (entry) {
      if (root.contains(entry.figure)) { entry.plot.destroy(); return false; }
      return true;
    });
  }

  function drawAll() {
    document.querySelectorAll("figure.chart[data-chart]").forEach(function (figure) {
      if (figure.dataset.drawn) { return; }
      var chart = JSON.parse(figure.dataset.chart);
      var plot = chart.kind === "scatter" ? scatterPlot(figure, chart) : new uPlot(
        chartOptions(chart, figure.clientWidth || 800),
        [chart.x].concat(chart.series.map(function (s) { return s.values; })), figure);
      figure.dataset.drawn = "true";
      figure.plot = plot;   // the uPlot instance (its .data), for the console and the browser tests
      drawn.push({ figure: figure, plot: plot });
    });
  }

  var resizing = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizing);
    resizing = setTimeout(function () {
      drawn.forEach(function (entry) {
        entry.plot.setSize({ width: entry.figure.clientWidth, height: 300 });
      });
    }, 150);
  });

  document.addEventListener("DOMContentLoaded", drawAll);
  // A polled fragment replaces its section: free the old charts, draw the new ones.
  document.addEventListener("htmx:beforeSwap", function (event) { forget(event.detail.target); });
  document.addEventListener("htmx:afterSettle", drawAll);

  // <form data-confirm="..."> asks before posting (delete).
  document.addEventListener("submit", function (event) {
    var question = event.target.dataset && event.target.dataset.confirm;
    if (question && !window.confirm(question)) { event.preventDefault(); }
  });
  // <form data-autosubmit> applies a filter as soon as a select changes.
  document.addEventListener("change", function (event) {
    var form = event.target.form;
    if (form && form.hasAttribute("data-autosubmit") && event.target.tagName === "SELECT") {
      form.requestSubmit();
    }
  });
})();
