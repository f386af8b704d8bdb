"""The explorer's own small assets: its stylesheet, its script and the module palette.

Kept as Python strings rather than files so that they ship with the package as code (no package-data rule) and a
static export can inline them. Plotly's own ``plotly.min.js`` comes from the plotly package.
"""

from __future__ import annotations

import colorsys
import functools

# 24 well-separated colours (Plotly's Dark24), then golden-angle hues at alternating lightness: no colour repeats,
# however many modules a partition has.
_BASE = (
    "#2E91E5", "#E15F99", "#1CA71C", "#FB0D0D", "#DA16FF", "#222A2A", "#B68100", "#750D86", "#EB663B", "#511CFB",
    "#00A08B", "#FB00D1", "#FC0080", "#B2828D", "#6C7C32", "#778AAE", "#862A16", "#A777F1", "#620042", "#1616A7",
    "#DA60CA", "#6C4516", "#0D2A63", "#AF0038",
)  # fmt: skip
UNCLUSTERED = "#d0d0d0"


@functools.cache
def palette(n: int) -> tuple[str, ...]:
    """``n`` distinct colours for modules 0…n−1 (hex, no repeats for any n)."""
    colours = list(_BASE[:n])
    i = 0
    while len(colours) < n:
        hue = (0.13 + i * 0.618033988749895) % 1.0
        light = (0.38, 0.55, 0.70)[i % 3]
        red, green, blue = colorsys.hls_to_rgb(hue, light, 0.75 - 0.1 * (i // 3 % 3))
        colour = f"#{round(red * 255):02x}{round(green * 255):02x}{round(blue * 255):02x}"
        if colour.upper() not in (c.upper() for c in colours):
            colours.append(colour)
        i += 1
    return tuple(colours)


def colour(cluster: int, n: int) -> str:
    """The colour of one module (−1, outside the partition: grey)."""
    return UNCLUSTERED if cluster < 0 else palette(max(n, cluster + 1))[cluster]


def rgba(hex_colour: str, alpha: float) -> str:
    red, green, blue = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red},{green},{blue},{alpha})"


CSS = """
body { font-family: system-ui, sans-serif; margin: 0; color: #222; background: #fafafa; }
nav { background: #263238; padding: 0.6em 1.2em; }
nav a { color: #eceff1; margin-right: 1.4em; text-decoration: none; font-weight: 600; }
main { padding: 1em 1.5em; max-width: 1400px; }
h1 { font-size: 1.5em; margin: 0.3em 0; } h2 { font-size: 1.15em; margin-top: 1.4em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; background: #fff; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #eef1f3; } table.sortable th { cursor: pointer; user-select: none; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.verdict { font-size: 1.1em; padding: 0.6em 0.9em; background: #fff; border-left: 4px solid #2E91E5; }
.note { color: #666; font-size: 0.9em; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(560px, 1fr)); gap: 1em; }
#details { background: #fff; border: 1px solid #ddd; padding: 0.6em 1em; min-height: 3em; }
form.params label { display: inline-block; margin: 0.2em 1em 0.2em 0; }
.error { color: #b00020; font-weight: 600; }
"""

JS = r"""
(function () {
  function cellValue(row, i) {
    const text = row.cells[i] ? row.cells[i].innerText.trim() : "";
    const number = parseFloat(text.replace(/,/g, ""));
    return isNaN(number) || !/^[-+0-9.,eE]+$/.test(text) ? text.toLowerCase() : number;
  }
  function sortable(table) {
    table.querySelectorAll("th").forEach(function (th, i) {
      th.title = "sort";
      th.addEventListener("click", function () {
        const body = table.tBodies[0];
        const up = th.dataset.order !== "asc";
        th.dataset.order = up ? "asc" : "desc";
        const rows = Array.from(body.rows);
        rows.sort(function (a, b) {
          const x = cellValue(a, i), y = cellValue(b, i);
          return (x > y ? 1 : x < y ? -1 : 0) * (up ? 1 : -1);
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  }
  function esc(value) {
    return String(value === null || value === undefined ? "" : value).replace(/[&<>"]/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c];
    });
  }
  function fmt(value) {
    return typeof value === "number" && !Number.isInteger(value) ? value.toPrecision(4) : esc(value);
  }
  function showModule(box, body) {
    let html = "<h3>module " + body.cluster + ": " + body.size + " neurons</h3><h4>members</h4><ul>";
    body.members.forEach(function (m) {
      html += "<li><b>" + esc(m.layer) + "</b> (" + esc(m.kind) + "): " + m.count + " — units " +
        m.units.join(", ") + (m.count > m.units.length ? ", …" : "") + "</li>";
    });
    html += "</ul><h4>core neurons (most within-module weight) and their strongest edges</h4><table class='core'>" +
      "<tr><th>rank</th><th>neuron</th><th>within</th><th>share</th><th>strongest edges</th></tr>";
    body.core.forEach(function (n) {
      const edges = n.edges.map(function (e) {
        return (e.kind === "in" ? "← " : "→ ") + esc(e.layer) + ":" + e.unit + " w=" + fmt(e.w) +
          (e.within ? " (within)" : " (to module " + esc(e.cluster) + ")");
      }).join("<br>");
      html += "<tr><td>" + n.rank + "</td><td>" + esc(n.layer) + ":" + n.unit + "</td><td>" + fmt(n.within) +
        "</td><td>" + fmt(n.within_share) + "</td><td>" + edges + "</td></tr>";
    });
    box.innerHTML = html + "</table>";
  }
  function moduleClicks(plot) {
    const box = document.getElementById("details");
    plot.on("plotly_click", function (event) {
      const point = event.points[0];
      if (!point || !point.customdata || point.customdata[0] < 0) return;
      const url = "/api/models/" + encodeURIComponent(plot.dataset.model) + "/clusters/" + point.customdata[0] +
        "?partition=" + encodeURIComponent(plot.dataset.partition);
      box.innerHTML = "loading module " + point.customdata[0] + "…";
      fetch(url).then(function (r) { return r.json(); }).then(function (body) {
        if (body.error) { box.innerHTML = "<p class='error'>" + esc(body.error) + "</p>"; return; }
        showModule(box, body);
      });
    });
  }
  function liveJobs(table) {
    const columns = Array.from(table.querySelectorAll("th")).map(function (th) { return th.innerText; });
    setInterval(function () {
      fetch("/api/jobs").then(function (r) { return r.json(); }).then(function (rows) {
        table.tBodies[0].innerHTML = rows.map(function (row) {
          return "<tr>" + columns.map(function (c) { return "<td>" + fmt(row[c]) + "</td>"; }).join("") + "</tr>";
        }).join("");
        const stamp = document.getElementById("jobs-updated");
        if (stamp) stamp.innerText = new Date().toLocaleTimeString();
      });
    }, 2000);
  }
  window.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("table.sortable").forEach(sortable);
    document.querySelectorAll(".module-plot").forEach(function (div) {
      const plot = div.querySelector(".js-plotly-plot") || div;
      plot.dataset.model = div.dataset.model;
      plot.dataset.partition = div.dataset.partition;
      if (plot.on) moduleClicks(plot);
    });
    const jobs = document.getElementById("jobs-table");
    if (jobs && !document.body.dataset.static) liveJobs(jobs);
  });
})();
"""
