/* The live atlas: model A and its dictionaries run in the page (onnxruntime-web, wasm, one thread),
   text tokenized by @huggingface/tokenizers from the tokenizer's own tokenizer.json.
   Written by mono_utils/atlas/live.py into live/; every file is a classic <script> that hands its
   bytes (base64) or JSON to ATLAS.put, because Chromium refuses fetch() and module scripts on file://.
   The runtime gets its wasm as bytes (env.wasm.wasmBinary) and its loader module as a data: URL, so it
   requests nothing. User text only ever reaches the page as textContent, never as HTML.
   ATLAS.live: init(), analyse(text, set), generate(opts), mount(app, set, unit) (atlas.js calls mount). */
(function () {
  'use strict';
  var A = window.ATLAS;
  var L = A.live = {ready: null, t: {}};
  var requested = {};
  var sessions = {};
  (function style() {        // the panel's few rules, here so that atlas.css stays the static atlas's
    var st = document.createElement('style');
    st.textContent = '.live{border-top:2px solid #ddd;margin-top:1.5em;padding-top:.5em}' +
      '.live textarea{width:100%;max-width:60em;font:inherit}' +
      '.live-toks{font-family:monospace;line-height:1.9;word-break:break-all;margin:.5em 0}' +
      '.live-toks bdi.ct{cursor:pointer;padding:0 1px;border-radius:2px}' +
      '.steer-cols{display:grid;grid-template-columns:1fr 1fr;gap:1.5em}' +
      '.live-jump{margin-left:1em;font-size:90%}';
    document.head.appendChild(st);
  })();

  function load(key, path) {
    if (A.data[key] !== undefined) return Promise.resolve(A.data[key]);
    return new Promise(function (resolve, reject) {
      (A.waiting[key] = A.waiting[key] || []).push(resolve);
      if (requested[path]) return;
      requested[path] = true;
      var s = document.createElement('script');
      s.src = path;
      s.charset = 'utf-8';
      s.onerror = function () { reject(new Error('cannot read ' + path + ': the live part of the atlas is incomplete; rebuild it')); };
      document.head.appendChild(s);
    });
  }
  function loadPlain(path, test) {   // a library script that defines a global
    if (test()) return Promise.resolve();
    return new Promise(function (resolve, reject) {
      var s = document.createElement('script');
      s.src = path;
      s.onload = function () { resolve(); };
      s.onerror = function () { reject(new Error('cannot read ' + path + ': rebuild the atlas')); };
      document.head.appendChild(s);
    });
  }
  function bytes(b64) {
    if (typeof Uint8Array.fromBase64 === 'function') return Uint8Array.fromBase64(b64);   // native where there is one
    var s = atob(b64), n = s.length, u = new Uint8Array(n);
    for (var i = 0; i < n; i++) u[i] = s.charCodeAt(i);
    return u;
  }
  function inflate(u8) {       // gzip -> bytes, by the browser's own decompressor (no library, no request)
    var stream = new Blob([u8]).stream().pipeThrough(new DecompressionStream('gzip'));
    return new Response(stream).arrayBuffer().then(function (b) { return new Uint8Array(b); });
  }
  function session(key) {
    if (!sessions[key]) {
      sessions[key] = load(key, key + '.js').then(function (b64) {
        return ort.InferenceSession.create(bytes(b64), {executionProviders: ['wasm'], graphOptimizationLevel: 'all'});
      });
    }
    return sessions[key];
  }

  // ------------------------------------------------------------ start: runtime, tokenizer, model
  L.init = function () {
    if (L.ready) return L.ready;
    var t0 = performance.now();
    L.ready = load('live/meta', 'live/meta.js').then(function (meta) {
      L.meta = meta;
      return Promise.all([
        loadPlain('live/ort.js', function () { return !!window.ort; }),
        load('live/ort-wasm-gz', 'live/ort-wasm.js').then(function (b64) { return inflate(bytes(b64)); }),
        loadPlain('live/tokenizers.js', function () { return !!window.HFTokenizers; }),
        load('live/tokenizer', 'live/tokenizer.js')]);
    }).then(function (r) {
      L.t.scripts_ms = performance.now() - t0;
      var tk = r[3];
      L.tokenizer = new window.HFTokenizers.Tokenizer(tk.json, tk.config);
      ort.env.wasm.numThreads = 1;           // threads need cross-origin isolation, which file:// lacks
      ort.env.wasm.proxy = false;
      ort.env.wasm.wasmBinary = r[1];
      L.t.decoded_ms = performance.now() - t0;
      ort.env.wasm.wasmPaths = {mjs: 'data:text/javascript;base64,' + A.data['live/ort-mjs']};
      return L.model('A');                   // model A at once; another model's graphs on first use
    }).then(function () {
      L.t.init_ms = performance.now() - t0;
      return L;
    });
    return L.ready;
  };

  // ------------------------------------------------------------ the computations
  L.model = function (m) {                    // {front, back} sessions of model m ('A', 'B'), loaded once
    var prefix = ((L.meta && L.meta.models) || {})[m || 'A'] || (m && m !== 'A' ? null : 'live/model');
    if (!prefix) return Promise.reject(new Error('no live model ' + m + ' in this atlas'));
    return Promise.all([session(prefix + '-front'), session(prefix + '-back')]).then(function (s) {
      return {front: s[0], back: s[1]};
    });
  };
  function modelOf(set) { var S = L.meta.sets[set]; return (S && S.model) || 'A'; }
  L.encodeText = function (text) {            // BOS + the text's tokens, as notebook 06's prepare_prompt
    return [L.meta.bos].concat(L.tokenizer.encode(String(text), {add_special_tokens: false}).ids);
  };
  L.forward = function (ids, m) {             // {resid, act} of layer 0 (tensors) for ids, on model m (default A)
    var T = ids.length;
    var tok = new ort.Tensor('int64', BigInt64Array.from(ids.map(function (i) { return BigInt(i); })), [1, T]);
    return L.model(m).then(function (g) { return g.front.run({tokens: tok}); })
      .then(function (o) { return {resid: o.resid_mid, act: o.mlp_post, T: T}; });
  };
  L.logits = function (resid, act, m) {       // act: a Float32Array [T * d_mlp] (edited or not)
    var a = new ort.Tensor('float32', act, resid.dims.slice(0, 2).concat([L.meta.d_mlp]));
    return L.model(m).then(function (g) { return g.back.run({resid_mid: resid, mlp_post: a}); })
      .then(function (o) { return o.logits; });
  };
  L.encode = function (set, act, T) {         // unit activations [T * n] of a set: features or neurons
    var S = L.meta.sets[set];
    if (!S) return Promise.reject(new Error('no live model for set ' + set));
    if (S.kind === 'neuron') return Promise.resolve(act);
    return session('live/sae-' + set + '-encode').then(function (enc) {
      return enc.run({x: new ort.Tensor('float32', act, [T, L.meta.d_mlp])});
    }).then(function (o) { return o.f.data; });
  };
  L.direction = function (set, unit) {        // the unit's dictionary vector (raw space), exactly W_dec_raw[unit]
    var S = L.meta.sets[set];
    if (S.kind === 'neuron') {
      var e = new Float32Array(L.meta.d_mlp); e[unit] = 1;
      return Promise.resolve(e);
    }
    return session('live/sae-' + set + '-decode').then(function (dec) {
      var f = new Float32Array(S.d_sae); f[unit] = 1;
      return dec.run({f: new ort.Tensor('float32', f, [1, S.d_sae])});
    }).then(function (o) { return o.dirs.data; });
  };
  // analyse: the text's tokens and every unit's activation on each
  L.analyse = function (text, set) {
    return L.init().then(function () {
      var ids = L.encodeText(text);
      var note = null;
      if (ids.length > L.meta.n_ctx) {
        note = 'the text has ' + (ids.length - 1) + ' tokens: only the first ' + (L.meta.n_ctx - 1) + ' fit the model\'s context';
        ids = ids.slice(0, L.meta.n_ctx);
      }
      var t0 = performance.now();
      return L.forward(ids, modelOf(set)).then(function (r) {   // a set of model B runs on model B
        return L.encode(set, r.act.data, r.T).then(function (f) {
          L.t.analyse_ms = performance.now() - t0;
          return {ids: ids, acts: f, n: L.meta.sets[set].d_sae, note: note};
        });
      });
    });
  };

  // ------------------------------------------------------------ generation (notebook 06's generate)
  function argmax(x, off, n) {
    var b = off, bv = x[off], second = -Infinity;
    for (var i = off + 1; i < off + n; i++) {
      var v = x[i];
      if (v > bv) { second = bv; bv = v; b = i; } else if (v > second) second = v;
    }
    return [b - off, bv - second];
  }
  function mulberry32(a) {
    return function () {
      a |= 0; a = a + 0x6D2B79F5 | 0;
      var t = Math.imul(a ^ a >>> 15, 1 | a);
      t = t + Math.imul(t ^ t >>> 7, 61 | t) ^ t;
      return ((t ^ t >>> 14) >>> 0) / 4294967296;
    };
  }
  function sample(x, off, n, temperature, topK, rand) {   // temperature + top-k, a seeded JS generator
    var arr = [];
    for (var i = 0; i < n; i++) arr.push([x[off + i] / temperature, i]);
    arr.sort(function (a, b) { return b[0] - a[0] || a[1] - b[1]; });
    if (topK) arr = arr.slice(0, topK);
    var m = arr[0][0], z = 0;
    arr.forEach(function (p) { p[0] = Math.exp(p[0] - m); z += p[0]; });
    var r = rand() * z;
    for (var k = 0; k < arr.length; k++) { r -= arr[k][0]; if (r <= 0) return arr[k][1]; }
    return arr[arr.length - 1][1];
  }
  /* opts: {prompt, set, unit, mode: clamp|add|null, value, n (<= 40), temperature (0: greedy), topK, seed}
     The edit is notebook 06's keep_error edit at every position: x + (f_new - f) * W_dec_raw[unit]. */
  L.generate = function (opts) {
    return L.init().then(function () {
      var S = L.meta.sets[opts.set];
      var n = Math.max(1, Math.min(L.meta.max_new, opts.n | 0));
      var ids = L.encodeText(opts.prompt);
      var room = L.meta.n_ctx - 1 - n;
      if (ids.length - 1 > room) ids = [L.meta.bos].concat(ids.slice(ids.length - room));
      var nPrompt = ids.length;
      var steer = opts.mode === 'clamp' || opts.mode === 'add';
      var rand = mulberry32(opts.seed | 0);
      var V = L.meta.d_vocab, D = L.meta.d_mlp;
      var ties = [], acts = [];
      var t0 = performance.now();
      return (steer ? L.direction(opts.set, opts.unit) : Promise.resolve(null)).then(function (dir) {
        function step(k) {
          if (k >= n) return null;
          return L.forward(ids, modelOf(opts.set)).then(function (r) {
            /* With one layer, the logits at a position depend only on that position's residual and MLP
               activations (attention comes before the MLP), so each step encodes, edits and unembeds the
               last position alone: the same numbers as the full pass at a fraction of the work. */
            var T = r.T, rows = L.meta.n_layers === 1 ? 1 : T, first = T - rows;
            var act = r.act.data.slice(first * D, T * D);
            var dm = r.resid.dims[2];
            var resid = rows === T ? r.resid : new ort.Tensor('float32', r.resid.data.slice(first * dm, T * dm), [1, rows, dm]);
            return L.encode(opts.set, act, rows).then(function (f) {
              acts.push(f[(rows - 1) * S.d_sae + opts.unit]);
              if (!steer) return L.logits(resid, act, modelOf(opts.set));
              var x = new Float32Array(act);
              for (var t = 0; t < rows; t++) {
                var old = f[t * S.d_sae + opts.unit];
                var nw = opts.mode === 'clamp' ? Math.fround(opts.value) : Math.fround(old + Math.fround(opts.value));   // torch: f32 + f32(value)
                var d = Math.fround(nw - old);
                if (d === 0) continue;
                for (var j = 0; j < D; j++) x[t * D + j] = Math.fround(x[t * D + j] + Math.fround(d * dir[j]));
              }
              return L.logits(resid, x, modelOf(opts.set));
            });
          }).then(function (logits) {
            var off = (logits.dims[1] - 1) * V, nxt;
            var am = argmax(logits.data, off, V);
            if (!(opts.temperature > 0)) {
              nxt = am[0];
              if (am[1] < 1e-4) ties.push({step: k, gap: am[1]});
            } else {
              nxt = sample(logits.data, off, V, opts.temperature, opts.topK === undefined ? 40 : opts.topK, rand);
            }
            ids.push(nxt);
            return step(k + 1);
          });
        }
        return step(0);
      }).then(function () {
        L.t.generate_ms = performance.now() - t0;
        return {prompt: ids.slice(0, nPrompt), ids: ids.slice(nPrompt), ties: ties, acts: acts};
      });
    });
  };

  // ------------------------------------------------------------ the panel
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
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === null || c === undefined) continue;
      if (Array.isArray(c)) c.forEach(function (x) { if (x) e.appendChild(typeof x === 'string' ? document.createTextNode(x) : x); });
      else e.appendChild(typeof c === 'string' ? document.createTextNode(c) : c);
    }
    return e;
  }
  function tokStr(id) {
    var v = A.data.vocab || [];
    var s = id < v.length ? v[id] : '<' + id + '>';
    return s.replace(/ /g, '\u00b7').replace(/\n/g, '\u21b5');
  }
  function fmt(x) { return Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 1 ? x.toFixed(2) : x.toFixed(3); }
  function shaded(ids, vals, mx, cls) {
    // the atlas's decoding: a character split over tokens shows whole, on the token that starts it
    var labels = A.decodeRun && A.showTok ? A.decodeRun(ids).map(A.showTok) : ids.map(tokStr);
    return el('div', {cls: cls || 'live-toks'}, ids.map(function (id, i) {
      var v = vals ? vals[i] : 0;
      var b = el('bdi', {cls: 'ct', 'data-i': String(i), 'data-act': vals ? String(v) : null, title: vals ? fmt(v) : null, text: labels[i]});
      if (vals && mx > 0 && v > 0) b.style.background = 'rgba(255,100,0,' + Math.min(1, v / mx).toFixed(3) + ')';
      return b;
    }));
  }
  function liveSets() { return Object.keys(L.meta.sets); }

  L.mount = function (app, set, unit) {
    var box = el('section', {cls: 'live', id: 'live'});
    var status = el('p', {cls: 'note live-status', text: 'Loading the live model\u2026'});
    box.appendChild(el('h2', {text: unit === null || unit === undefined ? 'Try your own text' : 'Try your own text on this unit'}));
    var crumbs = app.querySelector('.crumbs');
    if (crumbs && unit !== null && unit !== undefined) {      // the panel sits below the examples: a way down to it
      crumbs.appendChild(document.createTextNode(' '));
      crumbs.appendChild(el('button', {type: 'button', cls: 'live-jump', text: 'try it live / steer \u2193',
                                       onclick: function () { box.scrollIntoView(); }}));
    }
    box.appendChild(status);
    var anchor = (unit === null || unit === undefined) ? document.getElementById('results') : null;
    if (anchor && anchor.parentNode) anchor.parentNode.insertBefore(box, anchor); else app.appendChild(box);
    L.init().then(function () {
      status.textContent = 'The model runs in this page (onnxruntime-web); nothing leaves your computer.';
      var sets = liveSets();
      if (sets.indexOf(set) < 0) {
        status.textContent = 'The live model covers ' + sets.map(function (k) { return L.meta.sets[k].label; }).join(', ') +
          '; pick one of those sets to try your text.';
        return;
      }
      if (L.meta.sets[set].kind === 'feature') session('live/sae-' + set + '-encode');   // ready before the first Run
      if (modelOf(set) !== 'A') L.model(modelOf(set));                                   // model B's graphs too
      panel(box, set, unit);
    }).catch(function (e) {
      status.textContent = 'The live model could not start: ' + String(e && e.message || e);
      status.className = 'note error live-status';
    });
  };

  function panel(box, set, unit) {
    var S = L.meta.sets[set];
    var ta = el('textarea', {id: 'live-text', rows: '3', cols: '70', 'aria-label': 'your text', placeholder: 'Type or paste text here'});
    ta.value = 'The quick brown fox jumps over the lazy dog. 1,2,3,4,5';
    var pick = el('input', {id: 'live-unit', type: 'number', min: '0', max: String(S.n_units - 1), value: String(unit === null || unit === undefined ? '' : unit),
                            'aria-label': 'unit to shade by', placeholder: 'unit #'});
    var go = el('button', {type: 'button', id: 'live-run', text: 'Run'});
    var out = el('div', {id: 'live-out'});
    box.appendChild(el('div', {cls: 'live-controls'}, ta, el('div', null, 'shade by ' + S.label + ' unit ', pick, ' ', go)));
    box.appendChild(out);
    function run() {
      out.textContent = '';
      var u = pick.value === '' ? null : parseInt(pick.value, 10);
      L.analyse(ta.value, set).then(function (r) {
        var T = r.ids.length, n = r.n;
        if (r.note) out.appendChild(el('p', {cls: 'note', text: r.note}));
        var vals = null, mx = 0;
        if (u !== null && u >= 0 && u < n) {
          vals = [];
          for (var t = 0; t < T; t++) { var v = r.acts[t * n + u]; vals.push(v); mx = Math.max(mx, v); }
          out.appendChild(el('p', null, 'Shaded by ', el('a', {href: '#/' + set + '/' + u, cls: 'unitlink', text: S.label + ' #' + u}),
                             ' (max here ' + fmt(mx) + '). Hover a token for its value; click one for its top units.'));
        } else {
          out.appendChild(el('p', {text: 'Click a token for its top units.'}));
        }
        var toks = shaded(r.ids, vals, mx);
        toks.id = 'live-tokens';
        out.appendChild(toks);
        var detail = el('div', {id: 'live-detail'});
        out.appendChild(detail);
        function show(t) {
          detail.textContent = '';
          var row = [];
          for (var j = 0; j < n; j++) { var v = r.acts[t * n + j]; if (v > 0) row.push([j, v]); }
          row.sort(function (a, b) { return b[1] - a[1] || a[0] - b[0]; });
          detail.appendChild(el('p', null, 'Token ', el('bdi', {cls: 'tok', text: tokStr(r.ids[t])}), ' (position ' + t + '): ' +
                                (row.length ? 'top ' + Math.min(10, row.length) + ' of ' + row.length + ' active units' : 'no unit fires')));
          detail.appendChild(el('ol', {cls: 'live-top'}, row.slice(0, 10).map(function (p) {
            return el('li', null, el('a', {href: '#/' + set + '/' + p[0], cls: 'unitlink', text: S.label + ' #' + p[0]}), ' ' + fmt(p[1]));
          })));
        }
        toks.addEventListener('click', function (e) {
          var b = e.target.closest('bdi.ct');
          if (b) show(parseInt(b.getAttribute('data-i'), 10));
        });
        show(T - 1);
        out.setAttribute('data-done', '1');
      }).catch(function (e) {
        out.appendChild(el('p', {cls: 'note error', text: String(e && e.message || e)}));
        out.setAttribute('data-done', '1');
      });
    }
    go.addEventListener('click', run);
    if (unit !== null && unit !== undefined) steerPanel(box, set, unit);
  }

  function steerPanel(box, set, unit) {
    var S = L.meta.sets[set];
    var prompt = el('input', {id: 'steer-prompt', type: 'text', size: '50', value: '1,2,3,4,5,6,7,8,9,10', 'aria-label': 'prompt'});
    var mode = el('select', {id: 'steer-mode', 'aria-label': 'mode'}, el('option', {value: 'clamp', text: 'clamp to'}), el('option', {value: 'add', text: 'add'}));
    // the slider spans a few times the unit's largest indexed activation, as notebook 06's widget does
    var U = A.data[set + '/units'];
    var mx = U && U.cols.mx[unit] > 0 ? U.cols.mx[unit] : 10;
    var stepV = Math.pow(10, Math.floor(Math.log10(mx / 20)));
    var r = function (v) { return String(Math.round(v / stepV) * stepV); };
    var slider = el('input', {id: 'steer-value', type: 'range', min: r(-4 * mx), max: r(8 * mx), step: String(stepV), value: r(4 * mx), 'aria-label': 'value'});
    var readout = el('span', {id: 'steer-readout', text: slider.value});
    slider.addEventListener('input', function () { readout.textContent = slider.value; });
    var n = el('input', {id: 'steer-n', type: 'number', min: '1', max: String(L.meta.max_new), value: '20', 'aria-label': 'new tokens'});
    var temp = el('input', {id: 'steer-temp', type: 'number', min: '0', max: '5', step: '0.1', value: '0', 'aria-label': 'temperature (0: greedy)'});
    var seed = el('input', {id: 'steer-seed', type: 'number', value: '0', 'aria-label': 'seed'});
    var go = el('button', {type: 'button', id: 'steer-run', text: 'Generate'});
    var out = el('div', {id: 'steer-out', cls: 'steer-out'});
    box.appendChild(el('h2', {text: 'Steer with ' + S.label + ' #' + unit}));
    box.appendChild(el('div', {cls: 'live-controls'}, 'prompt ', prompt, ' ', mode, ' ', slider, ' ', readout,
      el('div', null, 'new tokens ', n, ' temperature ', temp, ' (0: greedy) seed ', seed, ' ', go)));
    box.appendChild(out);
    go.addEventListener('click', function () {
      out.textContent = '';
      out.removeAttribute('data-done');
      var o = {prompt: prompt.value, set: set, unit: unit, n: parseInt(n.value, 10) || 20,
               temperature: parseFloat(temp.value) || 0, seed: parseInt(seed.value, 10) || 0};
      L.generate(Object.assign({mode: null}, o)).then(function (base) {
        return L.generate(Object.assign({mode: mode.value, value: parseFloat(slider.value)}, o)).then(function (st) {
          var col = function (title, r, id) {
            var mx = Math.max.apply(null, r.acts.concat([0]));
            var d = shaded(r.ids, r.acts, mx, 'live-toks');
            d.id = id;
            return el('div', null, el('h3', {text: title}), d,
                      r.ties.length ? el('p', {cls: 'note', text: r.ties.length + ' greedy step(s) had their top two logits within 1e-4 (a near-tie: another runtime may pick the other token)'}) : null);
          };
          out.appendChild(el('div', {cls: 'steer-cols'}, col('baseline', base, 'steer-base'),
                             col('steered (' + mode.value + ' ' + slider.value + ')', st, 'steer-steered')));
          out.appendChild(el('p', {cls: 'note', text: 'Shading: the unit\'s activation before the edit at the position that predicted each token. ' +
            (o.temperature > 0 ? 'Sampling uses a seeded JavaScript generator: reproducible here, not the same draws as Python\'s.' : 'Greedy: the same tokens as notebook 06\'s generate(temperature=0).')}));
          out.setAttribute('data-done', '1');
        });
      }).catch(function (e) {
        out.appendChild(el('p', {cls: 'note error', text: String(e && e.message || e)}));
        out.setAttribute('data-done', '1');
      });
    });
  }
})();
