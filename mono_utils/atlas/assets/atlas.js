/* The feature atlas: an index page and one dashboard per unit, from the data files in data/.
   Vanilla JS, no network: data files are <script>s loaded on demand (see mono_utils/atlas/site.py).
   Routes (the part after #):  /SET  the index of a set (?token=ID, ?q=TEXT, ?unit=N, ?label=dom:NAME|sub:NAME,
   ?bin=I);  /SET/UNIT  a unit's dashboard. */
(function () {
  'use strict';
  var A = window.ATLAS;
  var meta = A.data.meta;
  var vocab = A.data.vocab || [];
  var app = document.getElementById('app');
  var bar = document.getElementById('bar');
  if (!meta) {
    app.textContent = 'data/meta.js is missing: rebuild the atlas (python -m mono_utils atlas).';
    return;
  }
  var SETS = {};
  meta.sets.forEach(function (s) { SETS[s.key] = s; });
  var PAGE = 200;
  var state = {};          // per set: the index page's controls
  var requested = {};      // data file path -> true once its <script> was added

  // ------------------------------------------------------------ loading data files
  function load(key, path) {
    if (A.data[key] !== undefined) return Promise.resolve(A.data[key]);
    return new Promise(function (resolve, reject) {
      (A.waiting[key] = A.waiting[key] || []).push(resolve);
      if (requested[path]) return;
      requested[path] = true;
      var s = document.createElement('script');
      s.src = path;
      s.charset = 'utf-8';
      s.onerror = function () {
        delete requested[path];
        reject(new Error('cannot read ' + path + ': the atlas folder is incomplete; rebuild it'));
      };
      document.head.appendChild(s);
    });
  }
  function pad4(n) { return ('000' + n).slice(-4); }
  function loadUnits(set) { return load(set + '/units', 'data/' + set + '/units.js'); }
  function loadTokens(set) { return load(set + '/tokens', 'data/' + set + '/tokens.js'); }
  function loadShard(set, unit, size) {
    var s = Math.floor(unit / size);
    return load(set + '/d/' + s, 'data/' + set + '/d/' + pad4(s) + '.js');
  }

  // ------------------------------------------------------------ small helpers
  function el(tag, attrs) {
    var e = document.createElement(tag);
    if (attrs) {
      for (var k in attrs) {
        var v = attrs[k];
        if (v === undefined || v === null || v === false) continue;
        if (k === 'text') e.textContent = v;
        else if (k === 'cls') e.className = v;
        else if (k.slice(0, 2) === 'on') e.addEventListener(k.slice(2), v);
        else e.setAttribute(k, v === true ? '' : v);
      }
    }
    for (var i = 2; i < arguments.length; i++) add(e, arguments[i]);
    return e;
  }
  function add(e, c) {
    if (c === undefined || c === null || c === false) return;
    if (Array.isArray(c)) { c.forEach(function (x) { add(e, x); }); return; }
    e.appendChild(typeof c === 'object' ? c : document.createTextNode(String(c)));
  }
  function svgEl(tag, attrs) {
    var e = document.createElementNS('http://www.w3.org/2000/svg', tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    return e;
  }
  function fmt(x, d) {
    if (x === null || x === undefined || (typeof x === 'number' && !isFinite(x))) return '–';
    d = d || 3;
    if (x === 0) return '0';
    var a = Math.abs(x);
    if (a >= 1e4 || a < 1e-3) return x.toExponential(d - 1);
    return String(Number(x.toPrecision(d)));
  }
  function pct(x) { return (x === null || x === undefined) ? '–' : (100 * x).toFixed(x < 0.1 ? 1 : 0) + '%'; }
  function int(n) { return Number(n).toLocaleString('en-US'); }
  function showTok(s) {
    return s.replace(/ /g, '\u00b7').replace(/\n/g, '\u21b5').replace(/\t/g, '\u2192') || '\u2205';
  }
  function tokText(id) { return id < vocab.length ? vocab[id] : '<' + id + '>'; }
  /* Byte-level BPE splits multi-byte characters (Hebrew, Arabic, CJK) across tokens: decode a run of
     tokens together, give each character to the token holding its first byte, and show a byte that
     starts no whole character as <xx>. Without the byte table, each token's own text. */
  var vhex = A.data.vocabhex || null, bytesOf = {};
  function tokBytes(id) {
    if (!bytesOf[id]) {
      var h = vhex[id] || '', b = [];
      for (var i = 0; i < h.length; i += 2) b.push(parseInt(h.substr(i, 2), 16));
      bytesOf[id] = b;
    }
    return bytesOf[id];
  }
  var UTF8 = new TextDecoder('utf-8', {fatal: true});
  function decodeRun(ids) {
    if (!vhex) return ids.map(tokText);
    var bytes = [], owner = [], out = ids.map(function () { return ''; });
    ids.forEach(function (id, k) { tokBytes(id).forEach(function (b) { bytes.push(b); owner.push(k); }); });
    for (var i = 0; i < bytes.length;) {
      var b0 = bytes[i], n = b0 < 0x80 ? 1 : (b0 >> 5) === 6 ? 2 : (b0 >> 4) === 14 ? 3 : (b0 >> 3) === 30 ? 4 : 0, ok = false;
      if (n && i + n <= bytes.length) {
        try { out[owner[i]] += UTF8.decode(new Uint8Array(bytes.slice(i, i + n))); ok = true; } catch (e) { ok = false; }
      }
      if (ok) i += n;
      else { out[owner[i]] += '\u2039' + ('0' + b0.toString(16)).slice(-2) + '\u203a'; i++; }
    }
    return out;
  }
  function tokLabel(id) { return decodeRun([id])[0]; }
  A.decodeRun = decodeRun; A.showTok = showTok;   // for live/live.js (typed and generated text)
  function tokChip(id, set, cls) {
    var t = el('bdi', {cls: 'tok ' + (cls || ''), text: showTok(tokLabel(id)), title: 'token ' + id + ': search it'});
    return set ? el('a', {href: '#/' + set + '?token=' + id, cls: 'toklink'}, t) : t;
  }
  var FLAGS = {1: ['dead', 'DEAD: never fired on the indexed tokens'],
               2: ['ultralow', 'ULTRALOW density: the paper leaves these out']};
  function flagBadge(flag) {
    var f = FLAGS[flag];
    return f ? el('span', {cls: 'badge ' + f[0], title: f[1], text: f[0]}) : null;
  }
  function setLabel(key) {
    if (SETS[key]) return SETS[key].label;
    if (key === 'B1') return 'B/1';
    if (key === 'BN') return 'B neurons';
    if (key === 'A1topk') return 'A/1 TopK';
    if (key === 'A1paper') return 'A/1 paper2023';
    if (/^Af\d+$/.test(key)) return 'A family ' + int(key.slice(2));
    return key;
  }
  function setOption(key) {
    if (key === 'B1' || key === 'BN') return '--sae B/1';
    if (key === 'A1topk') return '--sae topk';
    if (key === 'A1paper') return '--sae paper2023';
    if (/^Af\d+$/.test(key)) return '--sae A/' + key.slice(2);
    return '';
  }
  /* a link to a unit wherever one is named; plain text (with the option that adds it) when its set is not here */
  function unitLink(key, unit, text) {
    var label = text || (setLabel(key) + ' #' + unit);
    if (SETS[key]) return el('a', {href: '#/' + key + '/' + unit, cls: 'unitlink'}, label);
    return el('span', {cls: 'absent', title: setLabel(key) + ' is not in this atlas: build it with ' +
                       setOption(key)}, label);
  }

  // ------------------------------------------------------------ header
  function renderBar(active) {
    bar.textContent = '';
    var tabs = el('nav', {cls: 'tabs'});
    meta.sets.forEach(function (s) {
      tabs.appendChild(el('a', {href: '#/' + s.key, cls: s.key === active ? 'tab on' : 'tab'},
                           s.label, el('small', {text: ' ' + int(s.n_units)})));
    });
    bar.appendChild(el('div', {cls: 'brand'}, el('a', {href: '#/'}, 'Feature atlas'),
                       el('small', {text: ' · preset ' + meta.preset + ' · built ' + meta.built +
                                    (meta.commit ? ' from ' + meta.commit : '')})));
    bar.appendChild(tabs);
  }

  // ------------------------------------------------------------ routing
  function parseHash() {
    var h = decodeURIComponent(location.hash.replace(/^#\/?/, ''));
    var q = '';
    var i = h.indexOf('?');
    if (i >= 0) { q = location.hash.slice(location.hash.indexOf('?') + 1); h = h.slice(0, i); }
    var parts = h.split('/').filter(Boolean);
    var r = {set: parts[0] || meta.sets[0].key, unit: null, params: new URLSearchParams(q)};
    if (parts.length > 1) r.unit = parseInt(parts[1], 10);
    return r;
  }
  function route() {
    var r = parseHash();
    renderBar(r.set);
    if (!SETS[r.set]) {
      app.textContent = '';
      app.appendChild(el('p', {cls: 'note'}, setLabel(r.set) + ' is not in this atlas' +
                         (setOption(r.set) ? ' (build it with ' + setOption(r.set) + ')' : '') + '. Sets here: ',
                         meta.sets.map(function (s) { return [el('a', {href: '#/' + s.key}, s.label), ' ']; })));
      return;
    }
    var p = r.unit === null ? showIndex(r.set, r.params) : showUnit(r.set, r.unit);
    p.catch(function (e) {
      app.textContent = '';
      app.appendChild(el('p', {cls: 'note error', text: String(e && e.message || e)}));
    });
  }
  window.addEventListener('hashchange', route);

  // ------------------------------------------------------------ the index page
  function labelShare(U, i, label) {
    if (!label) return null;
    var n = U.cols.n[i];
    if (!n) return 0;
    var c = 0;
    if (label.lvl === 'dom') c = U.cols.dc[i][label.j];
    else {
      var sc = U.cols.sc[i];
      for (var k = 0; k < sc.length; k += 2) if (sc[k] === label.j) { c = sc[k + 1]; break; }
    }
    return c / n;
  }
  function parseLabel(U, s) {
    if (!s) return null;
    var m = /^(dom|sub):(.*)$/.exec(s);
    if (!m) return null;
    var names = m[1] === 'dom' ? U.domain_names : U.subdomain_names;
    var j = names.indexOf(m[2]);
    return j < 0 ? null : {lvl: m[1], j: j, name: m[2], key: s};
  }
  function topDomain(U, i) {
    var dc = U.cols.dc[i], n = U.cols.n[i], best = -1, bj = 0;
    if (!n) return null;
    for (var j = 0; j < dc.length; j++) if (dc[j] > best) { best = dc[j]; bj = j; }
    return [U.domain_names[bj], best / n];
  }
  function densityBins(U) {
    var xs = [];
    U.cols.d.forEach(function (d) { if (d > 0) xs.push(Math.log10(d)); });
    if (!xs.length) return null;
    var lo = Math.min.apply(null, xs), hi = Math.max.apply(null, xs);
    if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
    var nb = 40, w = (hi - lo) / nb, counts = new Array(nb).fill(0);
    xs.forEach(function (x) { counts[Math.min(nb - 1, Math.floor((x - lo) / w))]++; });
    return {lo: lo, hi: hi, w: w, counts: counts, n: nb};
  }
  function binOf(B, d) {
    if (!(d > 0)) return -1;
    return Math.min(B.n - 1, Math.floor((Math.log10(d) - B.lo) / B.w));
  }
  function histogram(U, B, st, set) {
    var W = 560, H = 120, pad = 22;
    var svg = svgEl('svg', {viewBox: '0 0 ' + W + ' ' + (H + pad + 12), cls: 'hist', role: 'img',
                           'aria-label': 'log-density histogram'});
    svg.setAttribute('class', 'hist');
    var top = Math.max.apply(null, B.counts) || 1, bw = W / B.n;
    var cut = U.ultralow_density > 0 ? (Math.log10(U.ultralow_density) - B.lo) / (B.hi - B.lo) * W : null;
    B.counts.forEach(function (c, i) {
      var h = c ? Math.max(1, H * c / top) : 0;
      var x0 = B.lo + i * B.w;
      var r = svgEl('rect', {x: i * bw + 0.5, y: H - h, width: Math.max(1, bw - 1), height: h,
                             'class': 'bar' + (st.bin === i ? ' sel' : '') +
                                      (cut !== null && (i + 1) * bw <= cut + 0.01 ? ' low' : ''),
                             'data-bin': i});
      var t = svgEl('title');
      t.textContent = 'log10 density ' + x0.toFixed(2) + ' to ' + (x0 + B.w).toFixed(2) + ': ' + c +
                      ' units (click to list them)';
      r.appendChild(t);
      // a transparent full-height target, so that short bars are easy to click
      var hit = svgEl('rect', {x: i * bw, y: 0, width: bw, height: H, 'class': 'hit', 'data-bin': i});
      hit.appendChild(t.cloneNode(true));
      [r, hit].forEach(function (e) {
        e.addEventListener('click', function () { location.hash = '#/' + set + '?bin=' + i; });
      });
      svg.appendChild(r);
      svg.appendChild(hit);
    });
    if (cut !== null && cut > 0 && cut < W) {
      svg.appendChild(svgEl('line', {x1: cut, x2: cut, y1: 0, y2: H, 'class': 'cut'}));
      var lt = svgEl('text', {x: cut + 3, y: 10, 'class': 'axis'});
      lt.textContent = 'ultralow cutoff';
      svg.appendChild(lt);
    }
    // the two ends, and every power of ten not too close to them
    var ticks = [[0, fmt(Math.pow(10, B.lo), 2), 'start'], [W, fmt(Math.pow(10, B.hi), 2), 'end']];
    for (var k = Math.ceil(B.lo); k <= Math.floor(B.hi); k++) {
      var x = (k - B.lo) / (B.hi - B.lo) * W;
      if (x > 40 && x < W - 40) ticks.push([x, '1e' + k, 'middle']);
    }
    ticks.forEach(function (t) {
      var tx = svgEl('text', {x: t[0], y: H + 14, 'class': 'axis', 'text-anchor': t[2]});
      tx.textContent = t[1];
      svg.appendChild(tx);
    });
    var cap = svgEl('text', {x: W / 2, y: H + pad + 10, 'class': 'axis', 'text-anchor': 'middle'});
    cap.textContent = 'density (share of indexed tokens where the unit fires), log scale';
    svg.appendChild(cap);
    return svg;
  }

  var SORTS = [['d', 'density'], ['mx', 'max activation'], ['n', 'firings'], ['share', 'share of the label'],
               ['ai', 'autointerp score'], ['ab', 'A\u2194B correlation'], ['u', 'unit number']];

  function showIndex(set, params) {
    return loadUnits(set).then(function (U) {
      var st = state[set] = state[set] || {mode: 'token', q: '', label: '', sort: 'd', desc: true,
                                           dead: true, ultra: true, bin: null, shown: PAGE};
      if (params.has('token')) { st.mode = 'token'; st.q = ''; st.tokenId = parseInt(params.get('token'), 10); }
      if (params.has('q')) { st.mode = 'token'; st.q = params.get('q'); st.tokenId = null; }
      if (params.has('unit')) { st.mode = 'unit'; st.q = params.get('unit'); }
      if (params.has('label')) { st.mode = 'label'; st.label = params.get('label'); st.sort = 'share'; }
      if (params.has('bin')) { st.bin = parseInt(params.get('bin'), 10); st.mode = st.mode === 'token' ? 'all' : st.mode; st.q = ''; }
      if (params.toString()) {          // the hash carried a query: keep it in the state, drop it from the URL
        history.replaceState(null, '', '#/' + set);
      }
      st.shown = PAGE;
      renderIndex(set, U, st);
    });
  }

  function renderIndex(set, U, st) {
    app.textContent = '';
    var S = SETS[set];
    var B = densityBins(U);
    var dead = 0, ultra = 0;
    U.cols.flag.forEach(function (f) { if (f === 1) dead++; else if (f === 2) ultra++; });
    app.appendChild(el('section', {cls: 'summary'},
      el('h1', null, S.label, el('small', {text: ' · ' + int(U.n_units) + ' ' + U.kind + 's of model ' + U.model})),
      el('p', {cls: 'note'}, int(U.n_tokens) + ' indexed tokens (held out). ',
         el('span', {cls: 'badge dead', text: int(dead) + ' dead'}), ' ',
         el('span', {cls: 'badge ultralow', text: int(ultra) + ' ultralow'}),
         ' (density below ' + fmt(U.ultralow_density) + '; the paper leaves both out). Source: ' + U.source)));
    var kn = indexKnows(set);
    if (kn) app.appendChild(kn);
    var row = el('div', {cls: 'top'});
    var left = el('div', {cls: 'controls'});
    var right = el('div', {cls: 'histbox'});
    row.appendChild(left);
    row.appendChild(right);
    app.appendChild(row);
    if (B) right.appendChild(histogram(U, B, st, set));
    right.appendChild(el('div', {cls: 'note small'}, 'Click a bar to list its units.' +
                         (dead ? ' Dead units (' + int(dead) + ') have no density and are not drawn.' : '')));

    var mode = el('select', {id: 'mode', 'aria-label': 'search by'},
      [['token', 'token'], ['label', 'text label (domain)'], ['unit', 'unit number'], ['all', 'all units']].map(function (o) {
        return el('option', {value: o[0], selected: st.mode === o[0]}, o[1]);
      }));
    var q = el('input', {id: 'q', type: 'search', value: st.q || '', autocomplete: 'off', spellcheck: 'false',
                         placeholder: 'a token (" def" or "·def"), or #12'});
    var labelSel = el('select', {id: 'label', 'aria-label': 'label'},
      el('option', {value: ''}, '(choose a domain or subdomain)'),
      el('optgroup', {label: 'domains'}, U.domain_names.map(function (n) {
        return el('option', {value: 'dom:' + n, selected: st.label === 'dom:' + n}, n);
      })),
      el('optgroup', {label: 'subdomains'}, U.subdomain_names.map(function (n) {
        return el('option', {value: 'sub:' + n, selected: st.label === 'sub:' + n}, n);
      })));
    var sort = el('select', {id: 'sort', 'aria-label': 'sort by'}, SORTS.map(function (o) {
      return el('option', {value: o[0], selected: st.sort === o[0]}, 'sort: ' + o[1]);
    }));
    var dir = el('button', {id: 'dir', type: 'button', title: 'sort direction', text: st.desc ? '\u2193 high first' : '\u2191 low first'});
    var cbDead = el('input', {type: 'checkbox', id: 'showdead', checked: st.dead});
    var cbUltra = el('input', {type: 'checkbox', id: 'showultra', checked: st.ultra});
    var go = el('button', {id: 'go', type: 'button', text: 'search'});
    var live = [];
    U.cols.flag.forEach(function (f, i) { if (f === 0) live.push(i); });
    var rnd = live.length ? el('a', {href: '#', id: 'random', title: 'a random unit that is neither dead nor ultralow',
      onclick: function (e) { e.preventDefault(); location.hash = '#/' + set + '/' + live[Math.floor(Math.random() * live.length)]; }},
      'random live unit') : null;
    left.appendChild(el('div', {cls: 'line'}, el('label', null, 'search by ', mode), ' ', q, ' ', go, ' ', rnd));
    left.appendChild(el('div', {cls: 'line'}, el('label', null, 'label ', labelSel)));
    left.appendChild(el('div', {cls: 'line'}, sort, ' ', dir, ' ',
                        el('label', null, cbDead, ' dead'), ' ', el('label', null, cbUltra, ' ultralow')));
    var chips = el('div', {cls: 'line chips'});
    left.appendChild(chips);
    var results = el('div', {id: 'results'});
    app.appendChild(results);

    function sync() {
      st.mode = mode.value; st.q = q.value; st.label = labelSel.value; st.sort = sort.value;
      st.dead = cbDead.checked; st.ultra = cbUltra.checked;
    }
    function run() { sync(); st.shown = PAGE; update(); }
    function search() {       // typing a query means a token (or "#N": a unit) whatever the mode was
      st.tokenId = null;
      if (q.value.trim() && (mode.value === 'label' || mode.value === 'all')) mode.value = 'token';
      run();
    }
    q.addEventListener('keydown', function (e) { if (e.key === 'Enter') search(); });
    go.addEventListener('click', search);
    mode.addEventListener('change', run);
    labelSel.addEventListener('change', function () {
      if (labelSel.value) { mode.value = 'label'; sort.value = 'share'; }
      run();
    });
    sort.addEventListener('change', run);
    cbDead.addEventListener('change', run);
    cbUltra.addEventListener('change', run);
    dir.addEventListener('click', function () {
      st.desc = !st.desc;
      dir.textContent = st.desc ? '\u2193 high first' : '\u2191 low first';
      run();
    });

    function update() {
      chips.textContent = '';
      results.textContent = '';
      if (st.bin !== null && st.bin !== undefined && B) {
        var x0 = B.lo + st.bin * B.w;
        chips.appendChild(el('span', {cls: 'chip'}, 'density 1e' + x0.toFixed(2) + ' to 1e' + (x0 + B.w).toFixed(2) + ' ',
          el('button', {type: 'button', title: 'clear', text: '\u00d7', onclick: function () {
            st.bin = null; renderIndex(set, U, st);
          }})));
      }
      if (st.mode === 'token' && /^#\d+$/.test(st.q.trim())) st.mode = mode.value = 'unit';   // "#12": a unit number
      if (st.mode === 'token' && (st.q.trim() || st.tokenId !== null && st.tokenId !== undefined)) {
        results.appendChild(el('p', {cls: 'note', text: 'loading the token table…'}));
        loadTokens(set).then(function (T) { tokenResults(set, U, T, st, results); });
        return;
      }
      if (st.mode === 'unit' && st.q.trim()) {
        var n = parseInt(st.q.replace(/^#/, ''), 10);
        if (!(n >= 0 && n < U.n_units)) {
          results.appendChild(el('p', {cls: 'note error', text: 'no unit ' + st.q + ': units are numbered 0..' +
                                       (U.n_units - 1)}));
          return;
        }
        table(set, U, [n], null, results, st);
        return;
      }
      var label = parseLabel(U, st.label);
      if (st.mode === 'label' && !label) {
        results.appendChild(el('p', {cls: 'note', text: 'choose a domain or subdomain in "label"'}));
        return;
      }
      var ids = [];
      for (var i = 0; i < U.n_units; i++) {
        var f = U.cols.flag[i];
        if (f === 1 && !st.dead) continue;
        if (f === 2 && !st.ultra) continue;
        if (st.bin !== null && st.bin !== undefined && B && binOf(B, U.cols.d[i]) !== st.bin) continue;
        if (st.mode === 'label' && (U.cols.n[i] < U.label_min_count || !(labelShare(U, i, label) > 0))) continue;
        ids.push(i);
      }
      sortIds(U, ids, st.sort, st.desc, label);
      if (st.mode === 'label') {
        results.appendChild(el('p', {cls: 'note'}, int(ids.length) + ' units with at least ' + U.label_min_count +
          ' firings, ranked by the share of their firings in ' + label.name +
          ' (its share of the corpus: ' + pct(corpusShare(U, label)) + ').'));
      }
      table(set, U, ids, label, results, st);
    }
    update();
    if (A.live) A.live.mount(app, set, null);   // live/live.js: try your text (absent with --no-live)
  }
  /* the headline facts of the cached analyses, with links to the units they name */
  function indexKnows(set) {
    var k = meta.knows || {}, parts = [];
    if (set === 'A1' && k.steering && k.steering.demo) {
      var names = Object.keys(k.steering.demo);
      if (names.length) parts.push(el('span', null, 'The paper\u2019s demo features (steering catalog): ',
        names.map(function (n, i) { return [i ? ', ' : '', n + ' ', unitLink('A1', k.steering.demo[n], '#' + k.steering.demo[n])]; }), '. '));
    }
    var u = k.universality;
    if (u && (set === 'A1' || set === 'AN' || set === 'B1' || set === 'BN')) {
      var f = set[1] === '1' ? u.features : u.neurons;
      if (f) parts.push(el('span', {text: 'A\u2194B: median max activation correlation of A\u2019s live ' +
        (set[1] === '1' ? 'features' : 'neurons') + ' ' + fmt(f.median_max_corr, 3) + ' (' + int(f.n_live_a) + ' compared on ' +
        int(f.n_tokens) + ' tokens). '}));
    }
    var a = k.autointerp && k.autointerp[set];
    if (a) parts.push(el('span', {text: 'Autointerp (offline): ' + int(a.ok) + ' live units scored, median Spearman ' +
                                       fmt(a.median_spearman, 2) + '. '}));
    if (k.family && k.family.sizes && SETS[set].family_size) parts.push(el('span', {text: 'Family: ' + k.family.sizes.map(int).join(' \u2192 ') +
      ' features, linked at cosine > ' + k.family.threshold + '. '}));
    var missing = Object.keys(k).filter(function (n) { return k[n] && k[n].missing; });
    if (missing.length) parts.push(el('span', {text: 'Not built when this atlas was written, so left out: ' + missing.join(', ') +
      ' (python -m mono_utils build, then the atlas again). '}));
    return parts.length ? el('p', {cls: 'note knowsline'}, parts) : null;
  }
  function corpusShare(U, label) {
    return label.lvl === 'dom' ? U.domain_base[label.j] : U.subdomain_base[label.j];
  }
  function sortIds(U, ids, key, desc, label) {
    var v;
    if (key === 'u') v = function (i) { return i; };
    else if (key === 'share') v = function (i) { return label ? labelShare(U, i, label) : 0; };
    else v = function (i) { var x = U.cols[key][i]; return x === null || x === undefined ? -Infinity : x; };
    var keyd = {};
    ids.forEach(function (i) { keyd[i] = v(i); });
    ids.sort(function (a, b) {
      var x = keyd[a], y = keyd[b];
      if (x === y) return a - b;
      if (x === -Infinity) return 1;
      if (y === -Infinity) return -1;
      return desc ? y - x : x - y;
    });
  }
  function table(set, U, ids, label, box, st, extraCols) {
    var hasAi = U.cols.ai.some(function (x) { return x !== null; });
    var hasAb = U.cols.ab.some(function (x) { return x !== null; });
    var head = ['unit', 'top tokens', 'density', 'max act', 'top domain'];
    if (label) head.push('share in ' + label.name);
    if (hasAi) head.push('autointerp \u03c1');
    if (hasAb) head.push('A\u2194B corr');
    if (extraCols) head = head.concat(extraCols.head);
    var t = el('table', {cls: 'units'}, el('thead', null, el('tr', null, head.map(function (h) { return el('th', {text: h}); }))));
    var tb = el('tbody');
    var shown = ids.slice(0, st.shown);
    shown.forEach(function (i) {
      var td = topDomain(U, i);
      var cells = [
        el('td', null, el('a', {href: '#/' + set + '/' + i, cls: 'unitlink'}, '#' + i), ' ', flagBadge(U.cols.flag[i])),
        el('td', {cls: 'toks'}, U.cols.lab[i].map(function (id) { return tokChip(id); })),
        el('td', {cls: 'num', text: fmt(U.cols.d[i])}),
        el('td', {cls: 'num', text: fmt(U.cols.mx[i])}),
        el('td', {text: td ? td[0] + ' ' + pct(td[1]) : '–'})];
      if (label) cells.push(el('td', {cls: 'num', text: pct(labelShare(U, i, label))}));
      if (hasAi) cells.push(el('td', {cls: 'num', text: fmt(U.cols.ai[i], 2)}));
      if (hasAb) cells.push(el('td', {cls: 'num', text: fmt(U.cols.ab[i], 2)}));
      if (extraCols) cells = cells.concat(extraCols.cells(i));
      tb.appendChild(el('tr', {'data-unit': i}, cells));
    });
    t.appendChild(tb);
    box.appendChild(el('p', {cls: 'note count', text: int(ids.length) + ' unit' + (ids.length === 1 ? '' : 's') +
                                                       (ids.length > shown.length ? ', first ' + shown.length + ' shown' : '')}));
    box.appendChild(t);
    if (ids.length > shown.length) {
      box.appendChild(el('button', {type: 'button', cls: 'more', text: 'show ' + Math.min(PAGE, ids.length - shown.length) + ' more',
        onclick: function () { st.shown += PAGE; box.textContent = ''; table(set, U, ids, label, box, st, extraCols); }}));
    }
  }
  function normTok(s) { return s.replace(/\u00b7/g, ' ').replace(/\u21b5/g, '\n').replace(/\u2192/g, '\t'); }
  function tokenResults(set, U, T, st, box) {
    box.textContent = '';
    var occ = T._occ;
    var cands = [];
    if (st.tokenId !== null && st.tokenId !== undefined && !isNaN(st.tokenId)) cands = [st.tokenId];
    else {
      var q = normTok(st.q);
      var exact = [], near = [], part = [];
      for (var i = 0; i < vocab.length; i++) {
        var v = vocab[i];
        if (!occ[i]) continue;
        if (v === q) exact.push(i);
        else if (v.trim() === q.trim() && q.trim()) near.push(i);
        else if (q.trim() && v.indexOf(q.trim()) >= 0) part.push(i);
      }
      var byOcc = function (a, b) { return (occ[b] || 0) - (occ[a] || 0) || a - b; };
      near.sort(byOcc); part.sort(byOcc);
      cands = exact.concat(near, part);
    }
    if (!cands.length) {
      box.appendChild(el('p', {cls: 'note error', text: 'no token of the indexed text matches ' + JSON.stringify(st.q) +
                                                         ' (mind the leading space: type " def" or "·def")'}));
      return;
    }
    var t = cands[0];
    if (cands.length > 1) {
      box.appendChild(el('div', {cls: 'line chips'}, 'other matching tokens: ',
        cands.slice(1, 30).map(function (c) {
          return el('a', {href: '#/' + set + '?token=' + c, cls: 'toklink'}, el('bdi', {cls: 'tok', text: showTok(tokLabel(c))}),
                    el('small', {text: ' ' + int(occ[c] || 0) + ' '}));
        })));
    }
    var rows = T[String(t)] || [];
    box.appendChild(el('p', {cls: 'note'}, 'Units that fire most on ', el('bdi', {cls: 'tok', text: showTok(tokLabel(t))}),
      ' (token ' + t + ', ' + int(occ[t] || 0) + ' occurrences in the indexed text): mean activation over every occurrence, ' +
      'and the share of occurrences where the unit fires.'));
    if (!rows.length) {
      box.appendChild(el('p', {cls: 'note', text: 'no ' + U.kind + ' fires on this token'}));
      return;
    }
    var ids = rows.map(function (r) { return r[0]; });
    var by = {};
    rows.forEach(function (r) { by[r[0]] = r; });
    table(set, U, ids, null, box, {shown: PAGE}, {head: ['mean on token', 'fires on token'],
      cells: function (i) { return [el('td', {cls: 'num', text: fmt(by[i][1])}), el('td', {cls: 'num', text: pct(by[i][2])})]; }});
  }

  // ------------------------------------------------------------ a unit's dashboard
  function bars(counts, range, color, log, title) {
    if (!counts || !counts.length) return el('div', {cls: 'note', text: '(no data)'});
    var W = 300, H = 60;
    var vals = counts.map(function (c) { return log ? Math.log10(c + 1) : c; });
    var top = Math.max.apply(null, vals) || 1, bw = W / counts.length;
    var w = (range[1] - range[0]) / counts.length;
    var svg = svgEl('svg', {viewBox: '0 0 ' + W + ' ' + H, 'class': 'mini'});
    vals.forEach(function (v, i) {
      var h = counts[i] ? Math.max(1, H * v / top) : 0;
      var r = svgEl('rect', {x: i * bw, y: H - h, width: Math.max(1, bw - 1), height: h, fill: color});
      var tt = svgEl('title');
      tt.textContent = fmt(range[0] + i * w) + '..' + fmt(range[0] + (i + 1) * w) + ': ' + int(counts[i]);
      r.appendChild(tt);
      svg.appendChild(r);
    });
    return el('div', null, el('div', {cls: 'h3', text: title}), svg,
              el('div', {cls: 'note small', text: fmt(range[0]) + ' … ' + fmt(range[1]) + (log ? ' (log count)' : '')}));
  }
  function context(ctx, mx, key) {
    // ctx = [row, pos, start, act, token ids, per-mille activations]
    var line = el('div', {cls: 'ctx'});
    line.appendChild(el('span', {cls: 'act', text: fmt(ctx[3], 3)}));
    var body = el('span', {cls: 'toks'});
    var texts = decodeRun(ctx[4]);
    ctx[4].forEach(function (id, j) {
      var q = ctx[5][j], cont = texts[j] === '';
      var s = el('bdi', {cls: 'ct' + (ctx[2] + j === ctx[1] ? ' peak' : '') + (cont ? ' cont' : ''),
                         text: cont ? '\u200b' : showTok(texts[j]),
                         title: 'activation ≈ ' + fmt(q / 1000 * mx) + ' · token ' + id + ' ' + JSON.stringify(tokLabel(id)) +
                                (cont ? ' (its bytes end the character before)' : '')});
      if (q > 0) s.style.background = 'rgba(255,100,0,' + (q / 1000).toFixed(3) + ')';
      body.appendChild(s);
    });
    line.appendChild(body);
    line.appendChild(el('span', {cls: 'where', text: 'row ' + ctx[0] + ':' + ctx[1]}));
    return line;
  }
  function knows(set, U, rec) {
    var x = rec.x || {};
    var box = el('section', {cls: 'knows'}, el('div', {cls: 'h3', text: 'What the build knows about it'}));
    var S = SETS[set];
    // universality
    if (x.ab) {
      if (x.ab.excluded) box.appendChild(el('div', {cls: 'match'}, 'Universality: left out of the A\u2194B comparison (dead, ultralow or too few firings).'));
      else box.appendChild(el('div', {cls: 'match'}, 'Universality: most correlated unit of model B: ',
        unitLink(x.ab.to, x.ab.unit), ', activation correlation ' + fmt(x.ab.corr, 3) +
        ', logit-weight similarity ' + fmt(x.ab.logit_sim, 2) +
        (x.ab.attr_sim !== null && x.ab.attr_sim !== undefined ? ', attribution similarity ' + fmt(x.ab.attr_sim, 2) : '') +
        '.'));
    } else if (x.ba) {
      box.appendChild(el('div', {cls: 'match'}, 'Universality: ' + (x.ba.n ? x.ba.n + ' unit' + (x.ba.n > 1 ? 's' : '') +
        ' of model A ' + (x.ba.n > 1 ? 'have' : 'has') + ' this as their most correlated unit: ' : 'no unit of model A has this as its most correlated unit (the comparison runs from A to B)'),
        x.ba.units.map(function (p, k) { return [k ? ', ' : '', unitLink(x.ba.from, p[0]), ' (' + fmt(p[1], 3) + ')']; }),
        x.ba.live ? '' : ' (itself left out as a match: dead, ultralow or too few firings)'));
    } else if (S.model === 'A' && (S.key === 'A1' || S.key === 'AN')) {
      box.appendChild(el('div', {cls: 'match note', text: 'Universality: not computed for this unit.'}));
    }
    // family
    if (x.fam) {
      var f = x.fam;
      var parts = ['Feature splitting (family of ' + f.sizes.map(int).join(', ') + '): '];
      if (f.parent) parts.push('parent ', unitLink(f.parent[0], f.parent[1]), ' (cosine ' + fmt(f.parent[2], 2) + ')');
      else if (f.level > 0) parts.push(f.linked ? 'no parent above the threshold' : 'not linked (dead or ultralow)');
      else parts.push('smallest size: no parent');
      if (f.children) {
        var ch = f.children[1];
        parts.push('; ' + (ch.length ? ch.length + ' child' + (ch.length > 1 ? 'ren' : '') + ' in ' + setLabel(f.children[0]) + ': ' : 'no children in ' + setLabel(f.children[0])));
        ch.slice(0, 12).forEach(function (c, k) { parts.push(k ? ', ' : '', unitLink(f.children[0], c[0], '#' + c[0]), ' (' + fmt(c[1], 2) + ')'); });
        if (ch.length > 12) parts.push(' …');
      }
      box.appendChild(el('div', {cls: 'family'}, parts));
    }
    // autointerp
    if (x.ai) {
      var ex = x.ai.expl || '(no explanation)';
      var short = ex.length > 220 ? ex.slice(0, 200).replace(/\s+\S*$/, '') + ' …' : ex;
      var q = el('q', {cls: 'expl', text: short, title: ex.length > 220 ? 'click for the whole explanation' : null});
      if (short !== ex) q.addEventListener('click', function () { q.textContent = q.textContent === ex ? short : ex; });
      box.appendChild(el('div', {cls: 'autointerp'}, 'Autointerp (offline baseline backend): ', q,
        ' · Spearman ' + fmt(x.ai.spearman, 2) + ', Pearson ' + fmt(x.ai.pearson, 2) +
        ', logit test ' + fmt(x.ai.logit_acc, 2) + (x.ai.single_token ? ' · single-token' : '') +
        (x.ai.status !== 'ok' ? ' · status: ' + x.ai.status : '')));
    } else if (set === 'A1' || set === 'AN') {
      box.appendChild(el('div', {cls: 'autointerp note', text: 'Autointerp: not scored (dead and ultralow units are left out, as in the paper).'}));
    }
    // steering
    if (x.st) {
      var e = x.st;
      box.appendChild(el('div', {cls: 'steer'}, 'Steering catalog: ' + e.sub + ' ' + pct(e.share) + ' · tokens ',
        e.tokens.map(function (s) { return el('bdi', {cls: 'tok', text: showTok(s)}); }),
        ' · max ' + fmt(e.max) + (e.demo ? ' · the paper\u2019s ' + e.demo + ' demo feature' : '') +
        '. Clamp it at 10\u00d7 its max (' + fmt(10 * e.max) + ') in notebook 06 (w.pin(' + rec.u + ')) or ',
        el('code', {text: 'python -m mono_utils app steering'}), '.'));
    }
    return box.childNodes.length > 1 ? box : null;
  }
  function showUnit(set, unit) {
    var S = SETS[set];
    if (!(unit >= 0 && unit < S.n_units)) {
      return Promise.reject(new Error('no unit ' + unit + ' in ' + S.label + ': units are numbered 0..' + (S.n_units - 1)));
    }
    return loadUnits(set).then(function (U) {
      return loadShard(set, unit, U.shard).then(function (shard) {
        var rec = shard[unit % U.shard];
        renderUnit(set, U, rec);
      });
    });
  }
  function renderUnit(set, U, rec) {
    app.textContent = '';
    var S = SETS[set];
    var u = rec.u;
    var nav = el('div', {cls: 'crumbs'}, el('a', {href: '#/' + set}, S.label + ' index'), ' › ',
      el('b', {text: S.label + ' ' + U.kind + ' #' + u}), ' ',
      u > 0 ? el('a', {href: '#/' + set + '/' + (u - 1), id: 'prev'}, '‹ prev') : null, ' ',
      u < U.n_units - 1 ? el('a', {href: '#/' + set + '/' + (u + 1), id: 'next'}, 'next ›') : null);
    app.appendChild(nav);
    var d = rec.d;
    app.appendChild(el('div', {cls: 'head'}, el('h1', {text: S.label + ' #' + u}), ' ', flagBadge(rec.flag),
      el('p', null, 'density ' + fmt(d) + (d > 0 ? ' (log10 ' + Math.log10(d).toFixed(2) + ')' : '') +
        ', fires on ' + int(rec.n) + ' of ' + int(U.n_tokens) + ' indexed tokens, max activation ' + fmt(rec.mx))));
    var grid = el('div', {cls: 'dash'});
    var left = el('div', {cls: 'left'});
    var right = el('div', {cls: 'right'});
    grid.appendChild(left); grid.appendChild(right);
    app.appendChild(grid);
    left.appendChild(bars(rec.ah, rec.ar || [0, 0], '#ff6400', true, 'Activations (non-zero)'));
    left.appendChild(bars(rec.lh, rec.lr || [0, 0], '#888', false, 'Logit weights'));
    var lg = function (lst, cls) {
      return lst.map(function (p) { return el('div', null, tokChip(p[0], set, cls), ' ', el('span', {cls: 'num', text: (p[1] > 0 ? '+' : '') + fmt(p[1], 3)})); });
    };
    left.appendChild(el('div', {cls: 'logits'}, el('div', null, el('i', {text: 'positive'}), lg(rec.lt, 'pos')),
                        el('div', null, el('i', {text: 'negative'}), lg(rec.lb, 'neg'))));
    left.appendChild(el('div', {cls: 'h3', text: 'Where it fires (share of firings vs. corpus share)'}));
    var tot = rec.dc.reduce(function (a, b) { return a + b; }, 0) || 1;
    U.domain_names.forEach(function (n, j) {
      var share = rec.dc[j] / tot;
      left.appendChild(el('div', {cls: 'dom'}, el('a', {href: '#/' + set + '?label=' + encodeURIComponent('dom:' + n)}, n), ' ',
        el('span', {cls: 'dbar', style: 'width:' + Math.round(120 * share) + 'px'}), ' ' + pct(share) + ' ',
        el('span', {cls: 'note', text: '(corpus ' + pct(U.domain_base[j]) + ')'})));
    });
    if (rec.sc.length) {
      left.appendChild(el('div', {cls: 'note subs'}, 'top subdomains: ', rec.sc.map(function (p, k) {
        var n = U.subdomain_names[p[0]];
        return [k ? ', ' : '', el('a', {href: '#/' + set + '?label=' + encodeURIComponent('sub:' + n)}, n), ' ' + pct(p[1] / tot)];
      })));
    }
    var kn = knows(set, U, rec);
    if (kn) right.appendChild(kn);
    var ex = el('section', {cls: 'examples'});
    ex.appendChild(el('div', {cls: 'h3', text: 'Top activations'}));
    ex.appendChild(el('div', {cls: 'note small', text: 'orange = activation (hover a token for its value); outlined = the example\u2019s token. ' +
                                                      'Contexts: ' + meta.dash.before + ' tokens before, ' + meta.dash.after + ' after.'}));
    if (!rec.top.length) ex.appendChild(el('div', {cls: 'note', text: '(never fires on the indexed tokens)'}));
    rec.top.forEach(function (c) { ex.appendChild(context(c, rec.mx)); });
    var nI = rec.iv.length;
    rec.iv.forEach(function (it, i) {
      if (!it[3].length) return;
      ex.appendChild(el('div', {cls: 'h4'}, 'Interval ' + (nI - 1 - i) + ': ' + fmt(it[0]) + '–' + fmt(it[1]) + ' ',
                        el('span', {cls: 'note', text: '(' + int(it[2]) + ' tokens)'})));
      it[3].forEach(function (c) { ex.appendChild(context(c, rec.mx)); });
    });
    right.appendChild(ex);
    if (A.live) A.live.mount(app, set, u);   // live/live.js: try your text, steer (absent with --no-live)
    window.scrollTo(0, 0);
  }

  route();
})();
