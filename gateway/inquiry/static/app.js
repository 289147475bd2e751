"use strict";
// The built-in control dashboard: polls the inquiry API, draws charts with uPlot, searches one transaction.
(function () {
  const I18N = window.WASL_I18N;
  const params = new URLSearchParams(location.search);
  let lang = params.get("lang") || localStorage.getItem("wasl-lang") || "en";
  if (!I18N[lang]) lang = "en";
  const state = { range: "1h", filter: null, charts: {}, timer: null, lastAgg: null };
  const REFRESH_MS = 5000;

  const t = (key) => (I18N[lang] && I18N[lang][key]) || I18N.en[key] || key;
  const $ = (id) => document.getElementById(id);
  const nf = () => new Intl.NumberFormat(lang === "ar" ? "ar-u-nu-latn" : "en", { maximumFractionDigits: 1 });
  const num = (v) => (v === null || v === undefined ? "–" : nf().format(v));
  const ms = (v) => (v === null || v === undefined ? "–" : nf().format(v) + " ms");
  const pct = (v) => (v === null || v === undefined ? "–" : nf().format(v * 100) + "%");

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  const ltr = (text) => el("bdi", { dir: "ltr", class: "id" }, text);

  function table(headers, rows) {
    if (!rows.length) return el("p", { class: "muted", text: t("none") });
    return el("table", {}, el("thead", {}, el("tr", {}, headers.map((h) => el("th", { text: h })))),
      el("tbody", {}, rows));
  }

  function fmtTime(msValue) {
    const d = new Date(msValue);
    return d.toLocaleTimeString(lang === "ar" ? "ar-u-nu-latn" : "en-GB", { hour12: false }) +
      "." + String(d.getMilliseconds()).padStart(3, "0");
  }

  async function api(path, query) {
    const url = new URL(path, location.origin);
    for (const [k, v] of Object.entries(query || {})) if (v !== null && v !== undefined && v !== "") url.searchParams.set(k, v);
    const resp = await fetch(url, { headers: { Accept: "application/json" } });
    const body = await resp.json();
    if (!resp.ok) throw new Error((body.type || resp.status) + ": " + (body.message || ""));
    return body;
  }

  // -- language ---------------------------------------------------------------------------------------------------
  function applyLanguage() {
    document.documentElement.lang = lang;
    document.documentElement.dir = lang === "ar" ? "rtl" : "ltr";
    document.querySelectorAll("[data-i18n]").forEach((n) => { n.textContent = t(n.dataset.i18n); });
    document.querySelectorAll("[data-i18n-placeholder]").forEach((n) => { n.placeholder = t(n.dataset.i18nPlaceholder); });
    $("lang").textContent = t("lang");
    $("lang").setAttribute("lang", lang === "ar" ? "en" : "ar");
    document.title = "Wasl — " + t("title");
  }

  // -- coverage: a gateway that did not answer is shown, never hidden ------------------------------------------------
  function coverage(answer) {
    const banner = $("coverage");
    const missing = (answer.gateways || []).filter((g) => g.status !== "ok");
    if (!missing.length) { banner.hidden = true; banner.textContent = ""; return; }
    banner.hidden = false;
    banner.replaceChildren(t("incomplete"), ...missing.map((g) => el("span", { class: "pill bad" },
      ltr(g.server), " ", g.status, g.error ? " — " + g.error : "")));
  }

  // -- charts -------------------------------------------------------------------------------------------------------
  function chart(key, target, series, data) {
    const width = Math.max(280, target.clientWidth - 8);
    if (state.charts[key]) {
      state.charts[key].setSize({ width, height: 220 });
      state.charts[key].setData(data);
      return;
    }
    const opts = { width, height: 220, series: [{}, ...series], scales: { x: { time: true } },
      axes: [{}, { size: 56 }], legend: { live: false }, cursor: { drag: { x: false, y: false } } };
    state.charts[key] = new uPlot(opts, data, target);
  }

  function drawCharts(agg) {
    const xs = agg.series.map((p) => p.t_ms / 1000);
    chart("volume", $("chart-volume"), [
      { label: t("transactions"), stroke: "#2563eb", fill: "rgba(37,99,235,0.12)", width: 2 },
      { label: t("failed"), stroke: "#dc2626", fill: "rgba(220,38,38,0.15)", width: 2 }],
      [xs, agg.series.map((p) => p.count), agg.series.map((p) => p.failed)]);
    chart("latency", $("chart-latency"), [
      { label: "p50", stroke: "#16a34a", width: 2, spanGaps: true, points: { show: true, size: 5 } },
      { label: "p95", stroke: "#d97706", width: 2, spanGaps: true, points: { show: true, size: 5 } },
      { label: "p99", stroke: "#9333ea", width: 2, spanGaps: true, points: { show: true, size: 5 } }],
      [xs, agg.series.map((p) => p.p50_ms), agg.series.map((p) => p.p95_ms), agg.series.map((p) => p.p99_ms)]);
  }

  // -- the panels ---------------------------------------------------------------------------------------------------
  function drawKpis(agg) {
    $("kpi-count").textContent = num(agg.totals.count);
    $("kpi-errors").textContent = pct(agg.totals.error_rate);
    $("kpi-errors").classList.toggle("bad", agg.totals.error_rate > 0.05);
    $("kpi-p50").textContent = ms(agg.totals.p50_ms);
    $("kpi-p95").textContent = ms(agg.totals.p95_ms);
    $("kpi-p99").textContent = ms(agg.totals.p99_ms);
  }

  function drawMatrix(agg) {
    const members = agg.matrix.members;
    if (!members.length) { $("matrix").replaceChildren(el("p", { class: "muted", text: t("none") })); return; }
    const max = Math.max(1, ...agg.matrix.counts.flat());
    const head = el("tr", {}, el("th", { class: "corner", text: t("client") + " ↓ / " + t("provider") + (lang === "ar" ? " ←" : " →") }),
      members.map((m) => el("th", { title: m.member, text: m.name })));
    const rows = members.map((c, i) => el("tr", {}, el("th", { title: c.member, text: c.name }),
      members.map((p, j) => {
        const n = agg.matrix.counts[i][j], f = agg.matrix.failed[i][j];
        if (!n) return el("td", { class: "cell empty", text: "·" });
        const cell = el("td", { class: "cell" + (f ? " has-errors" : ""), tabindex: "0", role: "button",
          title: `${c.member} → ${p.member}: ${n} ${t("calls")}, ${f} ${t("failed")}`,
          "data-client": c.member, "data-provider": p.member,
          onclick: () => { state.filter = { client: c.member, provider: p.member }; refreshRecent(); } },
          el("div", { class: "n", text: num(n) }), f ? el("div", { class: "f", text: pct(f / n) }) : null);
        cell.style.setProperty("--heat", (0.08 + 0.55 * n / max).toFixed(3));
        return cell;
      })));
    $("matrix").replaceChildren(el("table", { class: "matrix" }, el("thead", {}, head), el("tbody", {}, rows)));
  }

  function serviceRows(list, key) {
    return list.map((s) => el("tr", {}, el("td", {}, ltr(s.service)), el("td", { text: s.provider_name }),
      el("td", { class: "num", text: num(s.count) }),
      key === "slow" ? el("td", { class: "num", text: ms(s.p95_ms) }) : el("td", { class: "num bad", text: num(s.failed) }),
      key === "slow" ? el("td", { class: "num", text: ms(s.backend_p95_ms) }) : el("td", { class: "num", text: pct(s.error_rate) }),
      key === "slow" ? null : el("td", {}, s.top_fault ? ltr(s.top_fault) : "")));
  }

  function drawServices(agg) {
    $("slowest").replaceChildren(table([t("service"), t("provider"), t("count"), "p95", t("backend") + " p95"],
      serviceRows(agg.slowest, "slow")));
    $("failing").replaceChildren(table([t("service"), t("provider"), t("count"), t("failed"), t("errorRate"), t("fault")],
      serviceRows(agg.most_failing, "fail")));
  }

  function days(untilMs, now) { return Math.floor((untilMs - now) / 86400000); }

  function drawGateways(health) {
    const now = health.now_ms;
    const rows = health.gateways.map((g) => {
      const ok = g.status === "ok";
      const auth = (g.certificates || []).find((c) => c.kind === "auth");
      const signs = (g.certificates || []).filter((c) => c.kind === "sign");
      const minSign = signs.length ? Math.min(...signs.map((c) => c.not_after_ms)) : null;
      const conf = g.globalconf || {};
      const ts = (g.messagelog || {}).timestamping || {};
      const certCell = (v) => v === null || v === undefined ? el("td", { text: "–" }) :
        el("td", { class: "num" + (days(v, now) < 30 ? " warn" : ""), text: num(days(v, now)) + " " + t("days") });
      return el("tr", { class: ok ? "" : "down", "data-server": g.server },
        el("td", {}, ltr(g.server)),
        el("td", {}, el("span", { class: "pill " + (ok ? "good" : "bad"), title: g.error || "", text: ok ? t("ok") : g.status })),
        el("td", { class: "num" + (conf.expired ? " bad" : ""), text: conf.age_s === undefined ? "–" : num(conf.age_s) + " " + t("seconds") }),
        el("td", { class: conf.expired ? "bad" : "", text: conf.expires_at_ms ? (conf.expired ? t("expired") : fmtTime(conf.expires_at_ms)) : "–" }),
        certCell(auth && auth.not_after_ms), certCell(minSign),
        el("td", { class: ts.state && ts.state !== "ok" && ts.state !== "off" ? "warn" : "", title: ts.description || "", text: ts.state || "–" }),
        el("td", { class: "num", text: g.opmon ? num(g.opmon.pending) + (g.opmon.dropped ? " / −" + num(g.opmon.dropped) : "") : "–" }));
    });
    $("gateways").replaceChildren(table([t("gateway"), t("status"), t("confAge"), t("confExpires"), t("authCert"),
      t("signCert"), t("timestamping"), t("opmon")], rows));
  }

  function statusPill(tx) {
    return el("span", { class: "pill " + (tx.status === "ok" ? "good" : "bad"), text: tx.status === "ok" ? t("ok") : (tx.fault_code || tx.status) });
  }

  async function refreshRecent() {
    const f = state.filter;
    $("recent-filter").replaceChildren(f ? el("span", {}, ltr(f.client), lang === "ar" ? " ← " : " → ", ltr(f.provider), " ",
      el("button", { type: "button", class: "link", onclick: () => { state.filter = null; refreshRecent(); }, text: t("showAll") })) : "");
    try {
      const page = await api("/api/v1/transactions", { last: state.range, limit: 15, client: f && f.client, provider: f && f.provider });
      const rows = page.transactions.map((tx) => el("tr", { class: "clickable", "data-xroad-id": tx.xroad_id,
        onclick: () => { $("search-input").value = tx.xroad_id; search(tx.xroad_id); } },
        el("td", { text: fmtTime(tx.started_ms) }), el("td", {}, ltr(tx.xroad_id)), el("td", {}, ltr(tx.client || "")),
        el("td", {}, ltr(tx.service || "")), el("td", {}, statusPill(tx)), el("td", { class: "num", text: ms(tx.duration_ms) })));
      $("recent").replaceChildren(table([t("time"), "X-Road-Id", t("client"), t("service"), t("status"), t("duration")], rows));
    } catch (err) {
      $("recent").replaceChildren(el("p", { class: "bad", text: String(err.message || err) }));
    }
  }

  async function refresh() {
    try {
      const [agg, health] = await Promise.all([api("/api/v1/aggregates", { last: state.range, buckets: 60 }), api("/api/v1/gateways")]);
      state.lastAgg = agg;
      coverage(agg.complete ? health : agg);
      drawKpis(agg); drawCharts(agg); drawMatrix(agg); drawServices(agg); drawGateways(health);
      $("updated").textContent = t("updated") + " " + fmtTime(Date.now());
      document.body.dataset.loaded = "true";
    } catch (err) {
      $("updated").textContent = String(err.message || err);
    }
    await refreshRecent();
  }

  // -- one transaction ----------------------------------------------------------------------------------------------
  function sideDetails(label, side) {
    if (!side) return null;
    const rows = [["X-Road-Id", side.xroad_id], [t("requestId"), side.request_id], [t("gateway"), side.gateway],
      [t("status"), String(side.status_code) + (side.fault_code ? " " + side.fault_code : "")],
      [t("size"), side.request_size + " / " + side.response_size + " B"], [t("duration"), ms(side.duration_ms)]];
    if (side.fault_message) rows.push([t("fault"), side.fault_message]);
    return el("div", { class: "side" }, el("h4", { text: label }),
      el("dl", {}, rows.map(([k, v]) => [el("dt", { text: k }), el("dd", {}, ltr(v === null ? "–" : v))])));
  }

  function renderTransaction(tx) {
    const total = tx.timeline.length ? tx.timeline[tx.timeline.length - 1].offset_ms || 1 : 1;
    const events = tx.timeline.map((e) => el("li", { class: "event " + e.side },
      el("span", { class: "dot" }), el("span", { class: "when", text: "+" + num(e.offset_ms) + " ms" }),
      el("span", { class: "what", text: t("side" + e.side) + " · " + t(e.event) }), el("span", { class: "gw" }, ltr(e.gateway || ""))));
    const bd = tx.breakdown;
    const parts = [["client_gateway", bd.client_gateway_ms], ["network", bd.network_ms], ["provider_gateway", bd.provider_gateway_ms], ["backend", bd.backend_ms]]
      .filter(([, v]) => v !== null && v !== undefined);
    const sum = parts.reduce((a, [, v]) => a + v, 0) || 1;
    const bar = el("div", { class: "stack", dir: "ltr" }, parts.map(([k, v]) => {
      const seg = el("span", { class: "seg " + k, title: t(k) + ": " + ms(v) });
      seg.style.width = Math.max(1, 100 * v / sum).toFixed(2) + "%";
      return seg;
    }));
    const legend = el("ul", { class: "legend" }, parts.map(([k, v]) => el("li", { class: k + (bd.largest === k ? " largest" : "") },
      el("span", { class: "swatch " + k }), t(k) + ": ", el("bdi", { dir: "ltr" }, ms(v)))));
    const head = el("div", { class: "tx-head" }, statusPill(tx), " ", ltr(tx.client || "?"), lang === "ar" ? " ← " : " → ", ltr(tx.service || "?"),
      el("span", { class: "muted" }, " · ", el("bdi", { dir: "ltr" }, fmtTime(tx.started_ms)), " · ",
        el("bdi", { dir: "ltr" }, ms(tx.duration_ms))));
    const meta = el("p", { class: "small muted" }, "X-Road-Id ", ltr(tx.xroad_id), " · ", t("traceId"), " ", ltr(tx.trace_id || "–"),
      tx.user_id ? [" · ", t("user"), " ", ltr(tx.user_id)] : "");
    const fault = tx.fault_code ? el("p", { class: "fault" }, ltr(tx.fault_code), " — ", tx.fault_message || "") : null;
    const missing = tx.missing_sides.length ? el("p", { class: "warn", text: t("missing") + tx.missing_sides.map((s) => t("side" + s)).join(", ") }) : null;
    return el("article", { class: "tx-card", "data-xroad-id": tx.xroad_id, "data-status": tx.status }, head, meta, fault, missing,
      el("h3", { text: t("breakdown") }), bar, legend,
      el("h3", { text: t("timeline") }), el("ol", { class: "timeline", "data-total": total }, events),
      el("div", { class: "sides" }, sideDetails(t("clientSide"), tx.sides.client), sideDetails(t("providerSide"), tx.sides.provider)));
  }

  async function search(text) {
    const value = (text || "").trim();
    if (!value) return;
    const out = $("tx-result");
    out.replaceChildren(el("p", { class: "muted", text: t("searching") }));
    const query = /^[0-9a-fA-F]{32}$/.test(value) ? { trace_id: value.toLowerCase() } : { xroad_id: value };
    try {
      const answer = await api("/api/v1/transaction", query);
      const note = answer.complete ? null : el("p", { class: "warn" }, t("incomplete"), answer.unanswered.map((s) => ltr(s + " ")));
      out.replaceChildren(note || "", ...(answer.transactions.length ? answer.transactions.map(renderTransaction)
        : [el("p", { class: "muted", text: t("notFound") })]));
    } catch (err) {
      out.replaceChildren(el("p", { class: "bad", text: String(err.message || err) }));
    }
  }

  // -- wiring -------------------------------------------------------------------------------------------------------
  $("search-form").addEventListener("submit", (ev) => { ev.preventDefault(); search($("search-input").value); });
  $("range").addEventListener("change", (ev) => { state.range = ev.target.value; refresh(); });
  $("lang").addEventListener("click", () => {
    lang = lang === "ar" ? "en" : "ar";
    localStorage.setItem("wasl-lang", lang);
    applyLanguage();
    for (const c of Object.values(state.charts)) c.destroy();
    state.charts = {};
    refresh();
    const current = $("search-input").value;
    if (current) search(current);
  });
  window.addEventListener("resize", () => { if (state.lastAgg) drawCharts(state.lastAgg); });
  applyLanguage();
  if (params.get("range")) { state.range = params.get("range"); $("range").value = state.range; }
  refresh();
  state.timer = setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS);
  if (params.get("q")) { $("search-input").value = params.get("q"); search(params.get("q")); }
})();
