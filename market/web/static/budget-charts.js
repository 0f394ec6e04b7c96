// The budget page's charts, drawn through charts.js (Chart.js 4.6.1) from the JSON the page
// embeds in <script type="application/json" id="budget-data">: data, not code, so script-src
// 'self' holds. Amounts arrive as decimal strings and become numbers for drawing only; the
// tables beside the charts hold the exact figures.
import {drawChart} from "./charts.js";

const source = document.getElementById("budget-data");
if (source && typeof window.Chart === "function") {
  const data = JSON.parse(source.textContent);
  const money = new Intl.NumberFormat(document.documentElement.lang || undefined,
                                      {style: "currency", currency: data.currency});
  const numbers = function (values) { return values.map(Number); };

  const draw = function (id, labels, datasets, titles) {
    const canvas = document.getElementById(id);
    if (!canvas) { return; }
    drawChart(canvas, {
      type: "bar", labels: labels, datasets: datasets, titles: titles,
      format: money.format, legend: true,
      yTicks: {callback: function (value) { return money.format(value); }}
    });
  };

  const lines = data.lines;
  draw("budget-lines-chart", lines.codes, [
    {label: data.labels.approved, data: numbers(lines.approved), backgroundColor: "#9bbbe0"},
    {label: data.labels.spent, data: numbers(lines.spent), backgroundColor: "#0b5cad"}
  ], lines.codes.map(function (code, i) { return code + " " + lines.names[i]; }));

  const months = data.months;
  draw("budget-months-chart", months.labels, [
    {label: data.labels.committed, data: numbers(months.committed), backgroundColor: "#e0a84a"},
    {label: data.labels.spent, data: numbers(months.spent), backgroundColor: "#0b5cad"}
  ], null);
}
