// The console's own script: the CSRF token on htmx's requests, and the overview's charts (uPlot), redrawn
// every step from /ui/data/overview. It writes text with textContent only, never HTML.
(function () {
  "use strict";

  document.addEventListener("htmx:configRequest", function (event) {
    var meta = document.querySelector('meta[name="csrf-token"]');
    if (meta) {
      event.detail.headers["X-CSRF-Token"] = meta.content;
    }
  });

  // Colours with a contrast of 3:1 or more against white, told apart without relying on hue alone (dashes).
  var COLOURS = ["#1f5fa8", "#b3471b", "#2a7a3b", "#7a3fa0", "#8a6d00", "#006f7a", "#a8325e", "#4d4d4d"];
  var DASHES = [[], [6, 3], [2, 2], [8, 3, 2, 3]];

  function formatter(unit) {
    return function (u, values) {
      return values.map(function (v) {
        if (v == null) { return ""; }
        if (unit === "%") { return v.toFixed(v < 10 ? 1 : 0) + "%"; }
        if (unit === "ms") { return v >= 1000 ? (v / 1000).toFixed(1) + " s" : v.toFixed(0) + " ms"; }
        return v >= 100 ? v.toFixed(0) : v.toFixed(v >= 10 ? 1 : 2);
      });
    };
  }

  // A line's colour (and dash) by its name, the same on every chart: `small` is one colour everywhere.
  function styles(data) {
    var names = [];
    data.charts.forEach(function (c) {
      c.series.forEach(function (s) {
        if (names.indexOf(s.label) < 0) { names.push(s.label); }
      });
    });
    names.sort();
    var out = {};
    names.forEach(function (name, i) {
      out[name] = { stroke: COLOURS[i % COLOURS.length], dash: DASHES[Math.floor(i / COLOURS.length) % DASHES.length] };
    });
    return out;
  }

  function options(chart, width, style) {
    var series = [{}];
    chart.series.forEach(function (s) {
      series.push({
        label: s.label,
        stroke: style[s.label].stroke,
        dash: style[s.label].dash,
        width: 2,
        spanGaps: false,
        value: function (u, v) { return v == null ? "-" : formatter(chart.unit)(u, [v])[0]; }
      });
    });
    return {
      width: width,
      height: 220,
      series: series,
      scales: { x: { time: true }, y: { range: function (u, min, max) { return [0, Math.max(max || 0, chart.unit === "%" ? 1 : 0.001) * 1.1]; } } },
      axes: [{}, { values: formatter(chart.unit), size: 60 }],
      legend: { live: true }
    };
  }

  function signature(data) {
    return data.charts.map(function (c) {
      return c.id + ":" + c.series.map(function (s) { return s.label; }).join(",");
    }).join("|");
  }

  function Charts(root) {
    this.root = root;
    this.plots = [];
    this.shape = null;
  }

  // Two charts a row on a wide screen: each figure adds 18 px (padding, border) and the row a 16 px gap.
  Charts.prototype.width = function () {
    var w = this.root.clientWidth;
    return Math.max(260, w >= 900 ? Math.floor((w - 16) / 2) - 20 : w - 20);
  };

  Charts.prototype.draw = function (data) {
    var shape = signature(data);
    if (shape === this.shape) {
      this.plots.forEach(function (p) {
        p.plot.setData([data.t].concat(data.charts[p.index].series.map(function (s) { return s.values; })));
      });
      return;
    }
    this.plots.forEach(function (p) { p.plot.destroy(); });
    this.plots = [];
    this.shape = shape;
    this.root.replaceChildren();
    var width = this.width();
    var style = styles(data);
    var self = this;
    data.charts.forEach(function (chart, index) {
      var figure = document.createElement("figure");
      figure.className = "chart";
      var caption = document.createElement("figcaption");
      caption.textContent = chart.title;
      figure.appendChild(caption);
      self.root.appendChild(figure);
      if (chart.series.length === 0) {
        var empty = document.createElement("p");
        empty.className = "hint";
        empty.textContent = "No requests in the last hour.";
        figure.appendChild(empty);
        return;
      }
      var holder = document.createElement("div");
      holder.setAttribute("role", "img");
      holder.setAttribute("aria-label", chart.title + ": " + chart.series.map(function (s) { return s.label; }).join(", "));
      figure.appendChild(holder);
      var values = [data.t].concat(chart.series.map(function (s) { return s.values; }));
      self.plots.push({ index: index, plot: new uPlot(options(chart, width, style), values, holder) });
    });
  };

  Charts.prototype.resize = function () {
    var width = this.width();
    this.plots.forEach(function (p) { p.plot.setSize({ width: width, height: 220 }); });
  };

  function load(charts, source) {
    return fetch(source, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (reply) {
        if (reply.status === 401) {
          window.location.assign("/ui/login");
          return null;
        }
        return reply.ok ? reply.json() : null;
      })
      .then(function (data) {
        if (data) {
          charts.draw(data);
          charts.root.dataset.loaded = String(Date.now());
        }
      })
      .catch(function () { /* the next step tries again */ });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var root = document.getElementById("charts");
    if (!root || typeof uPlot === "undefined") {
      return;
    }
    var charts = new Charts(root);
    var source = root.dataset.src;
    var step = Math.max(0.5, parseFloat(root.dataset.step) || 10);
    load(charts, source);
    window.setInterval(function () { load(charts, source); }, step * 1000);
    var pending = null;
    window.addEventListener("resize", function () {
      window.clearTimeout(pending);
      pending = window.setTimeout(function () { charts.resize(); }, 150);
    });
  });
})();
