// A score timeline, drawn with uPlot (static/vendor/uplot): scores as points (clips come at
// irregular times, so no line joins them), anomalous ones in red, the threshold dashed, alert
// spans shaded; a log scale when the scores span more than two decades. The x axis spans the
// page's window (x_min..x_max: the chosen range ending now, or a zoom), whatever the data, in the
// page's time zone. Pointing at a clip shows its score, time and file; clicking it opens it;
// dragging across zooms, and the zoom is kept in the URL (?from=&to=). A live window (a range
// ending now) asks the API for new clips every 15 s.
(function () {
  "use strict";
  const el = document.getElementById("chart");
  const src = document.getElementById("chart-data");
  if (!el || !src || typeof uPlot === "undefined") return;
  let data = JSON.parse(src.textContent);
  const zone = data.tz === "UTC" ? "Etc/UTC" : data.tz;
  const fmt = new Intl.DateTimeFormat("sv-SE", {timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false, timeZoneName: "short"});
  const stamp = function (t) { return fmt.format(new Date(t * 1000)); };

  const SPAN_FILL = {anomaly: "rgba(198, 47, 60, 0.13)", sensor: "rgba(94, 53, 177, 0.12)", stale: "rgba(180, 83, 9, 0.12)"};

  function spansPlugin() {
    return {hooks: {drawClear: [function (u) {
      const ctx = u.ctx, top = u.bbox.top, h = u.bbox.height;
      const xmin = u.scales.x.min, xmax = u.scales.x.max;
      ctx.save();
      for (const [start, end, , kind] of data.spans) {  // a sensor fault or a silence is not the machine's alarm
        const a = Math.max(start, xmin), b = Math.min(end === null ? xmax : end, xmax);
        if (b < a) continue;
        ctx.fillStyle = SPAN_FILL[kind] || SPAN_FILL.anomaly;
        const x0 = u.valToPos(a, "x", true), x1 = u.valToPos(b, "x", true);
        ctx.fillRect(x0, top, Math.max(x1 - x0, 3), h);
      }
      ctx.restore();
    }], draw: [function (u) {  // the threshold across the whole axis, not only between the clips
      if (data.threshold === null || data.threshold === undefined) return;
      const y = u.valToPos(data.threshold, "y", true);
      if (!(y >= u.bbox.top && y <= u.bbox.top + u.bbox.height)) return;
      const ctx = u.ctx;
      ctx.save();
      ctx.strokeStyle = "#c62f3c";
      ctx.lineWidth = 1.5 * devicePixelRatio;
      ctx.setLineDash([6 * devicePixelRatio, 4 * devicePixelRatio]);
      ctx.beginPath();
      ctx.moveTo(u.bbox.left, y);
      ctx.lineTo(u.bbox.left + u.bbox.width, y);
      ctx.stroke();
      ctx.restore();
    }]}};
  }

  // the x axis' labels in 24-hour time, in the page's zone, with the date where it changes
  const part = new Intl.DateTimeFormat("en-CA", {timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23"});
  function ticks(u, splits) {
    const span = u.scales.x.max - u.scales.x.min;
    let day = null;
    return splits.map(function (t) {
      const p = {};
      part.formatToParts(new Date(t * 1000)).forEach(function (x) { p[x.type] = x.value; });
      const date = p.year + "-" + p.month + "-" + p.day;
      const time = span > 40 * 86400 ? "" : p.hour + ":" + p.minute + (span < 600 ? ":" + p.second : "");
      const label = date !== day ? (time ? time + "\n" + date : date) : time;
      day = date;
      return label;
    });
  }

  // the point under the cursor: its score, time and file, beside it
  function tooltipPlugin() {
    let tip;
    return {hooks: {
      init: [function (u) {
        tip = document.createElement("div");
        tip.id = "chart-tip";
        tip.className = "chart-tip";
        tip.hidden = true;
        u.over.appendChild(tip);
        u.over.addEventListener("mouseleave", function () { tip.hidden = true; });
      }],
      setCursor: [function (u) {
        const i = u.cursor.idx;
        if (i === null || i === undefined || u.cursor.left < 0 || data.score[i] === undefined) { tip.hidden = true; return; }
        const bad = data.anomalous[i] !== null;
        tip.innerHTML = "";
        const line = function (cls, text) { const d = document.createElement("div"); d.className = cls; d.textContent = text; tip.appendChild(d); };
        line("tip-score" + (bad ? " bad" : ""), "score " + Number(data.score[i]).toPrecision(4) + (bad ? " · anomalous" : ""));
        line("tip-time", stamp(data.t[i]));
        line("tip-file mono", data.file[i] || "(no file name)");
        tip.dataset.clip = String(data.clip[i]);
        const x = u.valToPos(data.t[i], "x"), y = u.valToPos(data.score[i], "y");
        tip.hidden = false;
        const w = tip.offsetWidth, left = x + 12 + w > u.over.clientWidth ? x - 12 - w : x + 12;
        tip.style.left = Math.max(0, left) + "px";
        tip.style.top = Math.max(0, y - 10) + "px";
      }],
    }};
  }

  function columns(d) {
    return [d.t, d.score, d.anomalous, d.t.map(function () { return d.threshold; })];
  }

  function logScale(d) {
    const v = d.score.concat([d.threshold]).filter(function (x) { return x !== null; });
    if (!v.length) return false;
    const lo = Math.min.apply(null, v), hi = Math.max.apply(null, v);
    return lo > 0 && hi / lo > 100;
  }

  // a zoom as the URL keeps it
  function zoomTo(min, max) {
    const q = new URLSearchParams(window.location.search);
    q.set("from", new Date(min * 1000).toISOString());
    q.set("to", new Date(max * 1000).toISOString());
    window.history.replaceState(null, "", "?" + q.toString());
    const reset = document.getElementById("reset-zoom");
    if (reset) reset.hidden = false;
    document.querySelectorAll("nav.ranges a.on").forEach(function (a) { a.classList.remove("on"); });
  }

  // uPlot asks for the x range with the data's extent (drawing, a double click) or with a zoom's
  // ends (a drag): the first gets the page's window, whatever the data; the second is kept
  function xRange(u, min, max) {
    const n = data.t.length;
    const auto = min === null || max === null || (n && min === data.t[0] && max === data.t[n - 1]);
    return auto || !(max > min) ? [data.x_min, data.x_max] : [min, max];
  }

  const log = logScale(data);
  const opts = {
    width: el.clientWidth || 900, height: 320, plugins: [spansPlugin(), tooltipPlugin()],
    tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), zone); },
    scales: {x: {time: true, range: xRange}, y: log ? {distr: 3} : {}},
    series: [
      {},
      {label: "score", stroke: "#4a6fa5", width: 0, paths: function () { return null; },
       points: {show: true, size: 5, fill: "#4a6fa5"}},
      {label: "anomalous", stroke: "#c62f3c", width: 0, paths: function () { return null; },
       points: {show: true, size: 8, fill: "#c62f3c"}},
      {label: "threshold", class: "thr", stroke: "#c62f3c", width: 1.5, dash: [6, 4], points: {show: false}},
    ],
    axes: [{stroke: "#6b7785", grid: {stroke: "#eef1f4"}, values: ticks, size: 52},
           {stroke: "#6b7785", grid: {stroke: "#eef1f4"}, size: 64, label: log ? "score (log scale)" : "score"}],
    legend: {show: false},
    cursor: {points: {size: 9}, drag: {x: true, y: false}},
    hooks: {setScale: [function (u, key) {
      if (key !== "x" || u.scales.x.min === null) return;
      const min = u.scales.x.min, max = u.scales.x.max;
      if (Math.abs(min - data.x_min) > 0.5 || Math.abs(max - data.x_max) > 0.5) zoomTo(min, max);
    }]},
  };
  const u = new uPlot(opts, columns(data), el);
  window.humwatchChart = u;
  u.over.addEventListener("click", function () {
    const i = u.cursor.idx;
    if (i !== null && i !== undefined && data.clip[i] !== undefined && u.select.width < 2) window.location.href = "/clips/" + data.clip[i];
  });
  window.addEventListener("resize", function () { u.setSize({width: el.clientWidth, height: 320}); });
  if (!data.live) return;

  const span = data.span_s;
  function refresh() {
    const machine = encodeURIComponent(el.dataset.machine);
    const q = "order=asc&limit=5000&since=" + encodeURIComponent(new Date(data.x_min * 1000).toISOString());
    Promise.all([
      fetch("/api/v1/machines/" + machine + "/scores?" + q, {credentials: "same-origin"}).then(function (r) { return r.json(); }),
      fetch("/api/v1/alerts?machine=" + machine + "&limit=500", {credentials: "same-origin"}).then(function (r) { return r.json(); }),
    ]).then(function (res) {
      const items = res[0].items, alerts = res[1].items;
      if (!items) return;
      const ts = function (iso) { return Date.parse(iso) / 1000; };
      const now = Date.now() / 1000;
      const zoomed = u.scales.x.min > data.x_min + 1 || u.scales.x.max < data.x_max - 1;
      data = {
        t: items.map(function (c) { return ts(c.at); }), score: items.map(function (c) { return c.score; }),
        anomalous: items.map(function (c) { return c.decision === "anomalous" ? c.score : null; }),
        clip: items.map(function (c) { return c.clip_id; }), file: items.map(function (c) { return c.filename; }),
        threshold: data.threshold, tz: data.tz, live: true, span_s: span,
        x_min: el.dataset.range === "all" ? data.x_min : now - span, x_max: now,
        spans: alerts.map(function (a) { return [ts(a.start_at), a.end_at ? ts(a.end_at) : null, a.id, a.kind]; }),
      };
      u.setData(columns(data), !zoomed);
      el.dataset.points = String(data.t.length);
    }).catch(function () { /* the next round tries again */ });
  }
  window.setInterval(refresh, 15000);
})();
