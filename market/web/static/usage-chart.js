// The usage page's chart: a bar of tokens for each day of the range, drawn through charts.js
// (Chart.js 4.6.1, served from static/vendor/chart.umd.min.js, MIT licence) from the JSON the
// page embeds in <script type="application/json" id="usage-data">: data, not code, so
// script-src 'self' holds.
import {drawChart} from "./charts.js";

const source = document.getElementById("usage-data");
const canvas = document.getElementById("usage-chart");
if (source && canvas && typeof window.Chart === "function") {
  const data = JSON.parse(source.textContent);
  const numbers = new Intl.NumberFormat(document.documentElement.lang || undefined);
  drawChart(canvas, {
    type: "bar", labels: data.labels, titles: data.titles,
    datasets: [{label: data.label, data: data.tokens, backgroundColor: "#0b5cad"}],
    format: numbers.format, legend: false, yTicks: {precision: 0}
  });
}
