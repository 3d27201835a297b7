// The dashboard's behaviour: draw the charts a page carries as JSON (uPlot), redraw them when
// htmx swaps in a fresh fragment, and two small form helpers. No build step: plain ES2017.
(function () {
  "use strict";

  var PALETTE = ["#2855c5", "#d9480f", "#2b8a3e", "#862e9c", "#c92a2a", "#1098ad",
                 "#e67700", "#5c940d", "#364fc7", "#a61e4d"];
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

  function chartsIn(root) {
    var charts = {};
    root.querySelectorAll("script.chart-data").forEach(function (script) {
      JSON.parse(script.textContent).forEach(function (chart) { charts[chart.id] = chart; });
    });
    return charts;
  }

  function forget(root) {
    drawn = drawn.filter(function (entry) {
      if (root.contains(entry.figure)) { entry.plot.destroy(); return false; }
      return true;
    });
  }

  function drawAll() {
    var charts = chartsIn(document);
    document.querySelectorAll("figure.chart[data-chart-id]").forEach(function (figure) {
      var chart = charts[figure.dataset.chartId];
      if (!chart || figure.dataset.drawn) { return; }
      var data = [chart.x].concat(chart.series.map(function (s) { return s.values; }));
      var plot = new uPlot(chartOptions(chart, figure.clientWidth || 800), data, figure);
      figure.dataset.drawn = "true";
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
