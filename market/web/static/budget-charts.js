// The budget page's charts, drawn by Chart.js 4.6.1 (static/vendor/chart.umd.min.js, MIT
// licence) from the JSON the page embeds in <script type="application/json" id="budget-data">:
// data, not code, so script-src 'self' holds. Amounts arrive as decimal strings and become
// numbers for drawing only; the tables beside the charts hold the exact figures.
(function () {
  "use strict";
  var source = document.getElementById("budget-data");
  if (!source || typeof window.Chart !== "function") { return; }
  var data = JSON.parse(source.textContent);
  var locale = document.documentElement.lang || undefined;
  var money = new Intl.NumberFormat(locale, {style: "currency", currency: data.currency});
  var narrow = window.matchMedia("(max-width: 600px)");
  function aspectRatio() { return narrow.matches ? 1.2 : 2.5; }
  function numbers(values) { return values.map(Number); }
  var charts = [];

  function draw(id, type, labels, datasets, titles) {
    var canvas = document.getElementById(id);
    if (!canvas) { return; }
    // Chart.js sizes the canvas from its container, which must be positioned and hold only it.
    canvas.parentNode.style.position = "relative";
    charts.push(new window.Chart(canvas, {
      type: type,
      data: {labels: labels, datasets: datasets},
      options: {
        locale: locale,
        responsive: true,
        maintainAspectRatio: true,
        aspectRatio: aspectRatio(),
        animation: false,
        plugins: {
          tooltip: {callbacks: {
            title: function (items) {
              return titles ? titles[items[0].dataIndex] : items[0].label;
            },
            label: function (item) {
              return item.dataset.label + ": " + money.format(item.parsed.y);
            }
          }}
        },
        scales: {
          x: {ticks: {autoSkip: true, maxRotation: 0}},
          y: {beginAtZero: true, ticks: {callback: function (value) { return money.format(value); }}}
        }
      }
    }));
  }

  var lines = data.lines;
  draw("budget-lines-chart", "bar", lines.codes, [
    {label: data.labels.approved, data: numbers(lines.approved), backgroundColor: "#9bbbe0"},
    {label: data.labels.spent, data: numbers(lines.spent), backgroundColor: "#0b5cad"}
  ], lines.codes.map(function (code, i) { return code + " " + lines.names[i]; }));

  var months = data.months;
  draw("budget-months-chart", "bar", months.labels, [
    {label: data.labels.committed, data: numbers(months.committed), backgroundColor: "#e0a84a"},
    {label: data.labels.spent, data: numbers(months.spent), backgroundColor: "#0b5cad"}
  ], null);

  function fit() {
    charts.forEach(function (chart) {
      chart.options.aspectRatio = aspectRatio();
      chart.resize();
    });
  }
  if (narrow.addEventListener) { narrow.addEventListener("change", fit); }
})();
