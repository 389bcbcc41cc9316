// The machine page's score timeline, drawn with uPlot (static/vendor/uplot): scores as points
// (clips come at irregular times, so no line joins them), anomalous ones in red, the threshold
// dashed, alert spans shaded; a log scale when the scores span more than two decades; times in UTC.
// Clicking a point opens its clip. The data come with the page; every 15 s it asks the API for more.
(function () {
  "use strict";
  const el = document.getElementById("chart");
  const raw = JSON.parse(document.getElementById("chart-data").textContent);
  if (!el || typeof uPlot === "undefined") return;
  let data = raw;

  function spansPlugin() {
    return {hooks: {drawClear: [function (u) {
      const ctx = u.ctx, top = u.bbox.top, h = u.bbox.height;
      const xmin = u.scales.x.min, xmax = u.scales.x.max;
      ctx.save();
      ctx.fillStyle = "rgba(198, 47, 60, 0.13)";
      for (const [start, end] of data.spans) {
        const a = Math.max(start, xmin), b = Math.min(end === null ? xmax : end, xmax);
        if (b < a) continue;
        const x0 = u.valToPos(a, "x", true), x1 = u.valToPos(b, "x", true);
        ctx.fillRect(x0, top, Math.max(x1 - x0, 3), h);
      }
      ctx.restore();
    }]}};
  }

  function columns(d) {
    return [d.t, d.score, d.anomalous, d.t.map(function () { return d.threshold; })];
  }

  function logScale(d) {
    const v = d.score.concat([d.threshold]).filter(function (x) { return x !== null; });
    const lo = Math.min.apply(null, v), hi = Math.max.apply(null, v);
    return lo > 0 && hi / lo > 100;
  }

  const opts = {
    width: el.clientWidth || 900, height: 320, plugins: [spansPlugin()],
    tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); },
    scales: {x: {time: true}, y: logScale(data) ? {distr: 3} : {}},
    series: [
      {},
      {label: "score", stroke: "#4a6fa5", width: 0, paths: function () { return null; },
       points: {show: true, size: 5, fill: "#4a6fa5"}},
      {label: "anomalous", stroke: "#c62f3c", width: 0, paths: function () { return null; },
       points: {show: true, size: 8, fill: "#c62f3c"}},
      {label: "threshold", stroke: "#c62f3c", width: 1.5, dash: [6, 4], points: {show: false}},
    ],
    axes: [{stroke: "#6b7785", grid: {stroke: "#eef1f4"}},
           {stroke: "#6b7785", grid: {stroke: "#eef1f4"}, size: 64, label: logScale(data) ? "score (log scale)" : "score"}],
    legend: {show: false},
    cursor: {points: {size: 9}},
  };
  if (!data.t.length) return;
  const u = new uPlot(opts, columns(data), el);
  window.humwatchChart = u;
  u.over.addEventListener("click", function () {
    const i = u.cursor.idx;
    if (i !== null && i !== undefined) window.location.href = "/clips/" + data.clip[i];
  });
  window.addEventListener("resize", function () { u.setSize({width: el.clientWidth, height: 320}); });

  function refresh() {
    const machine = encodeURIComponent(el.dataset.machine);
    const since = data.t.length ? new Date(data.t[0] * 1000).toISOString() : null;
    const q = "order=asc&limit=5000" + (since ? "&since=" + encodeURIComponent(since) : "");
    Promise.all([
      fetch("/api/v1/machines/" + machine + "/scores?" + q, {credentials: "same-origin"}).then(function (r) { return r.json(); }),
      fetch("/api/v1/alerts?machine=" + machine + "&limit=500", {credentials: "same-origin"}).then(function (r) { return r.json(); }),
    ]).then(function (res) {
      const items = res[0].items, alerts = res[1].items;
      if (!items) return;
      const ts = function (iso) { return Date.parse(iso) / 1000; };
      data = {
        t: items.map(function (c) { return ts(c.at); }), score: items.map(function (c) { return c.score; }),
        anomalous: items.map(function (c) { return c.decision === "anomalous" ? c.score : null; }),
        clip: items.map(function (c) { return c.clip_id; }), threshold: data.threshold,
        spans: alerts.map(function (a) { return [ts(a.start_at), a.end_at ? ts(a.end_at) : null, a.id]; }),
      };
      u.setData(columns(data));
      el.dataset.points = String(data.t.length);
    }).catch(function () { /* the next round tries again */ });
  }
  window.setInterval(refresh, 15000);
})();
