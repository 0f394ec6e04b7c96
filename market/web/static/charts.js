// How the marketplace's pages draw a chart, with Chart.js 4.6.1 (static/vendor/chart.umd.min.js,
// MIT licence, loaded before the page's own module as window.Chart): sized from the canvas's
// container, in the page's locale, without animation, and taller on a phone held upright so
// the bars stay readable. Each page's module passes what it draws and how its values read.
const narrow = window.matchMedia("(max-width: 600px)");
const charts = [];

function aspectRatio() { return narrow.matches ? 1.2 : 2.5; }

if (narrow.addEventListener) {
  narrow.addEventListener("change", function () {
    charts.forEach(function (chart) {
      chart.options.aspectRatio = aspectRatio();
      chart.resize();
    });
  });
}

// A chart on canvas: type, labels and datasets as Chart.js takes them; titles, one a label for
// the tooltips (null: the label itself); format(value), a value as the tooltips show it;
// legend, whether the datasets are named beside the chart; yTicks, Chart.js's y-axis ticks.
export function drawChart(canvas, chart) {
  // Chart.js sizes the canvas from its container, which must be positioned and hold only it.
  canvas.parentNode.style.position = "relative";
  charts.push(new window.Chart(canvas, {
    type: chart.type,
    data: {labels: chart.labels, datasets: chart.datasets},
    options: {
      locale: document.documentElement.lang || undefined,
      responsive: true,
      maintainAspectRatio: true,
      aspectRatio: aspectRatio(),
      animation: false,
      plugins: {
        legend: {display: chart.legend},
        tooltip: {callbacks: {
          title: function (items) {
            return chart.titles ? chart.titles[items[0].dataIndex] : items[0].label;
          },
          label: function (item) {
            return item.dataset.label + ": " + chart.format(item.parsed.y);
          }
        }}
      },
      scales: {
        x: {ticks: {autoSkip: true, maxRotation: 0}},
        y: {beginAtZero: true, ticks: chart.yTicks}
      }
    }
  }));
}
