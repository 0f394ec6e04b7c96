// The usage page's chart: a bar of tokens for each day of the range, drawn by Chart.js 4.6.1
// (served from static/vendor/chart.umd.min.js, MIT licence) from the JSON the page embeds in
// <script type="application/json" id="usage-data">: data, not code, so script-src 'self' holds.
(function () {
  "use strict";
  var source = document.getElementById("usage-data");
  var canvas = document.getElementById("usage-chart");
  if (!source || !canvas || typeof window.Chart !== "function") { return; }
  var data = JSON.parse(source.textContent);
  var locale = document.documentElement.lang || undefined;
  var numbers = new Intl.NumberFormat(locale);
  // A phone held upright gets a taller chart, so the bars stay readable.
  var narrow = window.matchMedia("(max-width: 600px)");
  function aspectRatio() { return narrow.matches ? 1.2 : 2.5; }

  // Chart.js sizes the canvas from its container, which must be positioned and hold only it.
  canvas.parentNode.style.position = "relative";
  var chart = new window.Chart(canvas, {
    type: "bar",
    data: {
      labels: data.labels,
      datasets: [{label: data.label, data: data.tokens, backgroundColor: "#0b5cad"}]
    },
    options: {
      locale: locale,
      responsive: true,
      maintainAspectRatio: true,
      aspectRatio: aspectRatio(),
      animation: false,
      plugins: {
        legend: {display: false},
        tooltip: {callbacks: {
          title: function (items) { return data.titles[items[0].dataIndex]; },
          label: function (item) { return data.label + ": " + numbers.format(item.parsed.y); }
        }}
      },
      scales: {
        x: {ticks: {autoSkip: true, maxRotation: 0}},
        y: {beginAtZero: true, ticks: {precision: 0}}
      }
    }
  });

  function fit() {
    chart.options.aspectRatio = aspectRatio();
    chart.resize();
  }
  if (narrow.addEventListener) { narrow.addEventListener("change", fit); }
})();
