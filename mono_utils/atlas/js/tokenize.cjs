// Tokenize strings with @huggingface/tokenizers reading a tokenizer.json, the way the atlas page does
// (the same CommonJS build, the same files); used by tests/atlas/test_live.py to compare with Python.
// usage: node tokenize.cjs TOKENIZER_DIR STRINGS.json OUT.json   (STRINGS.json: a JSON list of strings)
'use strict';
const fs = require('fs');
const path = require('path');
const { Tokenizer } = require('@huggingface/tokenizers');
const [dir, inFile, outFile] = process.argv.slice(2);
const tj = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8'));
const cfgPath = path.join(dir, 'tokenizer_config.json');
const cfg = fs.existsSync(cfgPath) ? JSON.parse(fs.readFileSync(cfgPath, 'utf8')) : {};
const tok = new Tokenizer(tj, cfg);
const strings = JSON.parse(fs.readFileSync(inFile, 'utf8'));
const t0 = Date.now();
const ids = strings.map((s) => tok.encode(s, { add_special_tokens: false }).ids);
fs.writeFileSync(outFile, JSON.stringify({ ids, ms: Date.now() - t0 }));
