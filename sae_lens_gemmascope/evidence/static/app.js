/* sae-lens-gemmascope feature dashboard: search (#q=...) and one feature per page (#<feature>).
   Data files are scripts calling GS.put(kind, key, payload); they are loaded with <script> tags so
   that the same files work from file:// and from any static HTTP server. Nothing leaves this folder. */
(function () {
  "use strict";
  var GS = (window.GS = { store: { meta: {}, shard: {}, search: {} }, waiting: {} });

  GS.put = function (kind, key, payload) {
    GS.store[kind][key] = payload;
    var id = kind + ":" + key;
    var w = GS.waiting[id] || [];
    delete GS.waiting[id];
    w.forEach(function (cb) { cb[0](payload); });
  };

  function load(kind, key, src) {
    if (key in GS.store[kind]) return Promise.resolve(GS.store[kind][key]);
    return new Promise(function (resolve, reject) {
      var id = kind + ":" + key;
      var first = !GS.waiting[id];
      (GS.waiting[id] = GS.waiting[id] || []).push([resolve, reject]);
      if (!first) return;
      var s = document.createElement("script");
      s.src = src;
      s.onerror = function () {
        var w = GS.waiting[id] || [];
        delete GS.waiting[id];
        w.forEach(function (cb) { cb[1](new Error("missing data file " + src)); });
      };
      document.head.appendChild(s);
    });
  }

  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") e.textContent = attrs[k];
      else if (k === "cls") e.className = attrs[k];
      else e.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c) e.appendChild(c); });
    return e;
  }
  function num(x, d) {
    if (x === null || x === undefined) return "n/a";
    return Math.abs(x) >= 1e4 || (Math.abs(x) < 1e-3 && x !== 0) ? x.toExponential(2) : x.toFixed(d === undefined ? 3 : d);
  }
  function shown(t) { return t.replace(/\n/g, "\u21b5").replace(/\t/g, "\u2192"); }
  function status(text) { document.getElementById("status").textContent = text || ""; }

  var meta = null;
  function getMeta() { return load("meta", 0, "data/meta.js").then(function (m) { meta = m; return m; }); }

  function loadSearch() {
    return Promise.all(meta.search_files.map(function (k) { return load("search", k, "data/search/" + k + ".js"); }))
      .then(function (parts) { return [].concat.apply([], parts); });
  }

  function resultList(items, title) {
    var sec = document.getElementById("results");
    sec.hidden = false;
    document.getElementById("feature").hidden = true;
    sec.textContent = "";
    sec.appendChild(el("h2", { text: title }));
    var ul = el("ul", { cls: "results" });
    items.forEach(function (it) {
      var toks = it[3] ? it[3].split("\u241f").map(shown).join(" \u00b7 ") : "";
      ul.appendChild(el("li", { "data-feature": it[0] }, [
        el("a", { href: "#" + it[0], text: "Feature " + it[0] }),
        el("span", { cls: "toks", text: "  max " + num(it[2], 2) + " \u00b7 freq " + num(it[1], 5) + " \u00b7 " + toks }),
      ]));
    });
    sec.appendChild(ul);
  }

  function search(q) {
    status("searching\u2026");
    return loadSearch().then(function (all) {
      var query = q.trim();
      var hits;
      if (/^\d+$/.test(query)) {
        hits = all.filter(function (it) { return String(it[0]) === query || String(it[0]).indexOf(query) === 0; });
        hits.sort(function (a, b) { return a[0] - b[0]; });
      } else {
        var low = query.toLowerCase();
        hits = all.filter(function (it) { return it[3] && it[3].toLowerCase().indexOf(low) >= 0; });
        var exact = function (it) { return it[3].toLowerCase().split("\u241f").indexOf(low) >= 0 ? 0 : 1; };
        hits.sort(function (a, b) { return exact(a) - exact(b) || b[2] - a[2]; });
      }
      resultList(hits.slice(0, 200), hits.length + " feature(s) match \u201c" + query + "\u201d" + (hits.length > 200 ? " (first 200)" : ""));
      status("");
    });
  }

  function home() {
    return load("search", meta.search_files[0], "data/search/" + meta.search_files[0] + ".js").then(function (items) {
      var top = items.slice().sort(function (a, b) { return b[2] - a[2]; }).slice(0, 50);
      resultList(top, "Strongest features (of the first " + items.length + "); search by id or token text above");
      status("");
    });
  }

  function logitTable(rows, tok, cls, title) {
    var t = el("table", { cls: "logits" }, [el("tr", {}, [el("th", { text: title }), el("th", { cls: "num", text: "logit" })])]);
    rows.forEach(function (r) {
      t.appendChild(el("tr", {}, [el("td", {}, [el("span", { cls: "tok", text: shown(tok[r[0]] || "<id " + r[0] + ">") })]),
        el("td", { cls: "num " + cls, text: (r[1] >= 0 ? "+" : "") + num(r[1]) })]));
    });
    return t;
  }

  function histogram(rec, box) {
    if (!rec.hist || typeof uPlot === "undefined") return;
    var c = rec.hist.c, w = rec.hist.hi / c.length;
    var xs = c.map(function (_, i) { return (i + 0.5) * w; });
    new uPlot({
      width: 440, height: 200, legend: { show: false }, cursor: { show: false },
      scales: { x: { time: false, range: [0, rec.hist.hi] } },
      axes: [{ label: "activation" }, { label: "examples" }],
      series: [{}, { stroke: "rgb(255,140,0)", fill: "rgba(255,140,0,0.45)", points: { show: false },
        paths: uPlot.paths.bars({ size: [0.92, Infinity] }) }],
    }, [xs, c], box);
  }

  function exampleRow(ex, tok, max) {
    var lit = {};
    ex[5].forEach(function (p) { lit[p[0]] = p[1]; });
    var ctx = el("div", { cls: "ctx tok" });
    ex[4].forEach(function (id, i) {
      var text = tok[id] === undefined ? "<id " + id + ">" : tok[id];
      var s = el("span", { text: shown(text), title: "token " + id + (i in lit ? ", activation " + num(lit[i]) : "") });
      if (text.indexOf("\n") >= 0) s.className = "nl";
      if (i in lit && max > 0) s.style.background = "rgba(255,140,0," + Math.min(1, 0.12 + 0.88 * lit[i] / max).toFixed(3) + ")";
      if (i === ex[3]) { s.className += " active"; s.setAttribute("data-active", "1"); }
      ctx.appendChild(s);
    });
    return el("div", { cls: "ex", "data-seq": ex[1], "data-pos": ex[2] }, [el("span", { cls: "act", text: num(ex[0]) }), ctx]);
  }

  function feature(f) {
    var sec = document.getElementById("feature");
    document.getElementById("results").hidden = true;
    sec.hidden = false;
    sec.textContent = "";
    status("loading feature " + f + "\u2026");
    var shard = Math.floor(f / meta.shard);
    var absent = "Feature " + f + " is not in this dashboard (" + meta.n_features + " of " + meta.d_sae + " features were built).";
    if (f >= meta.d_sae) return Promise.reject(new Error("Feature " + f + " does not exist: this SAE has features 0 to " + (meta.d_sae - 1) + "."));
    return load("shard", shard, "data/f/" + shard + ".js").catch(function () { return { features: {} }; }).then(function (data) {
      var rec = data.features[String(f)];
      if (!rec) throw new Error(absent);
      var tok = data.tok;
      document.title = "Feature " + f + " \u00b7 " + meta.title;
      sec.appendChild(el("h2", { id: "feature-title", text: "Feature " + f }));
      var facts = el("table", { cls: "facts" });
      var addFact = function (k, v) { facts.appendChild(el("tr", {}, [el("td", { text: k }), el("td", {}, [v])])); };
      addFact("frequency", document.createTextNode(rec.freq === null ? "n/a" : num(rec.freq, 6) + " (" + num(rec.freq * 100, 4) + "% of tokens)"));
      addFact("stored examples", document.createTextNode(rec.n + " of " + meta.examples_per_feature));
      addFact("max activation", document.createTextNode(rec.max === undefined ? "n/a" : num(rec.max)));
      if (meta.neuronpedia) {
        var url = meta.neuronpedia.replace("{f}", String(f));
        addFact("Neuronpedia", el("a", { id: "neuronpedia", href: url, rel: "noopener", target: "_blank", text: url }));
      } else {
        addFact("Neuronpedia", document.createTextNode("no page known for this folder"));
      }
      sec.appendChild(facts);
      var row = el("div", { cls: "row" });
      row.appendChild(el("div", {}, [el("h3", { text: "raises" }), logitTable(rec.top, tok, "up", "top logit tokens")]));
      row.appendChild(el("div", {}, [el("h3", { text: "lowers" }), logitTable(rec.bot, tok, "down", "bottom logit tokens")]));
      var hist = el("div", { id: "hist" });
      var q = el("table", { cls: "quantiles" }, [el("tr", {}, [el("th", { text: "quantile" }), el("th", { cls: "num", text: "activation" })])]);
      (rec.q || []).forEach(function (p) { q.appendChild(el("tr", {}, [el("td", { text: String(p[0]) }), el("td", { cls: "num", text: num(p[1]) })])); });
      row.appendChild(el("div", {}, [el("h3", { text: "stored activations" }), hist]));
      row.appendChild(el("div", {}, [el("h3", { text: "quantiles" }), q]));
      sec.appendChild(row);
      histogram(rec, hist);
      sec.appendChild(el("h3", { text: "top " + rec.ex.length + " examples (highlight = recorded activation; outline = the example's token)" }));
      var list = el("div", { id: "examples" });
      rec.ex.forEach(function (ex) { list.appendChild(exampleRow(ex, tok, rec.max || 0)); });
      if (!rec.ex.length) list.appendChild(el("p", { text: "No examples: this feature never fired on the corpus." }));
      sec.appendChild(list);
      status("");
    });
  }

  function route() {
    var h = decodeURIComponent(location.hash.replace(/^#/, ""));
    var p;
    if (/^\d+$/.test(h)) p = feature(parseInt(h, 10));
    else if (h.indexOf("q=") === 0) { document.getElementById("q").value = h.slice(2); p = search(h.slice(2)); }
    else p = home();
    return p.catch(function (e) { status(e.message); });
  }

  document.getElementById("search-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var q = document.getElementById("q").value.trim();
    if (q) location.hash = "q=" + encodeURIComponent(q);
  });
  window.addEventListener("hashchange", route);
  getMeta().then(route).catch(function (e) { status(e.message); });
})();
