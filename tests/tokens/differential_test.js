#!/usr/bin/env node
// Differential test of admit's token counter against js-tiktoken (the npm package whose rank
// files the library embeds), run by ctest as tokens_differential. Both encodings, on:
//   - the fixtures (tests/tokens/fixtures: English, code, JSON, CJK, emoji, mixed scripts,
//     whitespace), and hand-picked edge cases;
//   - random Unicode strings from a fixed, printed seed (ADMIT_TEST_SEED overrides it): code
//     points across all planes, combining marks, whitespace of every kind and length, digits
//     and numbers of many lengths, apostrophe contractions, emoji sequences, many scripts;
//   - random bytes that are not UTF-8 (js-tiktoken gets them through a TextDecoder, which puts
//     U+FFFD where admit does);
//   - runs of one character up to 300 long (admit merges such pieces with a heap);
//   - every model name js-tiktoken maps to an encoding, against admit::encoding_for_model.
// The ids (and admit's count_tokens) must be identical. admit's side is tests/tokens/oracle.cpp,
// one process for every text.
//
// One difference is expected and left out: PCRE2 (Unicode 14 in Debian 12) and node (its ICU's
// Unicode) classify characters added by later Unicode versions differently. The oracle prints
// its character classes; code points whose classes differ from node's are never drawn, and
// their number is printed.
//
// Usage: node differential_test.js --oracle PATH --js-tiktoken DIR --fixtures DIR
//                                  [--count N] [--seed S]
"use strict";
const { spawnSync } = require("child_process");
const fs = require("fs");
const path = require("path");

function parseArgs(argv) {
  const args = { count: 2000, seed: 20261207 };
  for (let i = 2; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, "").replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    args[key] = argv[i + 1];
  }
  if (process.env.ADMIT_TEST_SEED) args.seed = Number(process.env.ADMIT_TEST_SEED);
  args.seed = Number(args.seed);
  args.count = Number(args.count);
  for (const k of ["oracle", "jsTiktoken", "fixtures"]) {
    if (!args[k]) {
      console.error("usage: differential_test.js --oracle PATH --js-tiktoken DIR --fixtures DIR");
      process.exit(2);
    }
  }
  return args;
}

const args = parseArgs(process.argv);
const started = Date.now();
const { Tiktoken } = require(path.join(args.jsTiktoken, "dist", "lite.cjs"));
const jsVersion = require(path.join(args.jsTiktoken, "package.json")).version;
const ENCODINGS = ["o200k_base", "cl100k_base"];
const tiktoken = {};
for (const name of ENCODINGS) {
  tiktoken[name] = new Tiktoken(require(path.join(args.jsTiktoken, "dist", "ranks", `${name}.cjs`)));
}

function runOracle(lines) {
  const r = spawnSync(args.oracle, [], {
    input: lines.join("\n") + "\n",
    maxBuffer: 1 << 30,
    encoding: "utf8",
  });
  if (r.error) throw r.error;
  if (r.status !== 0) {
    console.error(r.stderr);
    throw new Error(`the oracle exited with ${r.status} (signal ${r.signal})`);
  }
  return r.stdout.split("\n");
}

// ---- character classes: admit's (PCRE2) against node's ----
const CLASSES = ["ws", "L", "N", "Lu", "Lt", "Lm", "Lo", "Ll", "M"];
const classRegexes = [/^\s$/u, /^\p{L}$/u, /^\p{N}$/u, /^\p{Lu}$/u, /^\p{Lt}$/u, /^\p{Lm}$/u,
                      /^\p{Lo}$/u, /^\p{Ll}$/u, /^\p{M}$/u];
const pcreMask = new Int16Array(0x110000).fill(-1);
for (const line of runOracle(["classes"])) {
  if (line === "" || line === "end") continue;
  const [first, last, mask] = line.split(" ").map((x) => parseInt(x, 16));
  pcreMask.fill(mask, first, last + 1);
}
const excluded = new Set();
const excludedByClass = {};
for (let c = 0; c < 0x110000; c++) {
  if (c >= 0xd800 && c < 0xe000) continue;
  const s = String.fromCodePoint(c);
  let mask = 0;
  for (let i = 0; i < classRegexes.length; i++) if (classRegexes[i].test(s)) mask |= 1 << i;
  if (mask !== pcreMask[c]) {
    excluded.add(c);
    const diff = mask ^ pcreMask[c];
    for (let i = 0; i < CLASSES.length; i++) {
      if (diff & (1 << i)) excludedByClass[CLASSES[i]] = (excludedByClass[CLASSES[i]] || 0) + 1;
    }
  }
}
if (excluded.has(0x20) || excluded.has(0x41) || excluded.has(0x3000) || excluded.has(0xfeff)) {
  throw new Error("basic characters classify differently: the whitespace rewrite is wrong");
}

// ---- the texts ----
// xorshift128+: deterministic for a seed on every node version.
let s0 = BigInt.asUintN(64, BigInt(args.seed) * 0x9e3779b97f4a7c15n + 1n);
let s1 = BigInt.asUintN(64, BigInt(args.seed) ^ 0xd1b54a32d192ed03n);
function next64() {
  let x = s0;
  const y = s1;
  s0 = y;
  x = BigInt.asUintN(64, x ^ (x << 23n));
  s1 = x ^ y ^ (x >> 17n) ^ (y >> 26n);
  return BigInt.asUintN(64, s1 + y);
}
const rand = (n) => Number(next64() % BigInt(n));
const pick = (xs) => xs[rand(xs.length)];
const range = (a, b) => a + rand(b - a + 1);

const SPACES = [" ", "  ", "   ", "\t", "\n", "\r\n", "\n\n", "\r", "\u000b", "\u000c", "\u00a0",
                "\u1680", "\u2000", "\u2009", "\u200a", "\u2028", "\u2029", "\u202f", "\u205f",
                "\u3000", "\ufeff", "\u0085", "\u180e", "\u200b", "\u200d", " \n ", "\t\t\n"];
const CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"];
const WORDS = ["the", "token", "admit", "Hello", "WORLD", "naïve", "Straße", "déjà", "ﬁnance",
               "Ωmega", "İstanbul", "ǅemal", "московский", "ΑΘΗΝΑ", "東京", "서울", "मुंबई",
               "القاهرة", "ירושלים", "กรุงเทพ", "e\u0301", "a\u0308\u0304", "x̃", "ℌ", "Ⅻ"];
const PUNCT = ["!", "?", ".", ",", ";", ":", "-", "--", "...", "/", "//", "(", ")", "{", "}",
               "[", "]", "<|endoftext|>", "<|fim_prefix|>", "\"", "'", "`", "@", "#", "$", "%",
               "^", "&", "*", "_", "=", "+", "~", "|", "\\", "«", "»", "—", "¿", "。", "、",
               "・", "！", "€", "©", "→", "∑", "√"];
const EMOJI = ["😀", "👍🏽", "👨‍👩‍👧", "🇫🇷", "❤️", "🏳️‍🌈", "🧑🏿‍💻", "1️⃣", "☃", "🫠"];
// Blocks to draw single code points from (weights by repetition).
const BLOCKS = [
  [0x20, 0x7e], [0x20, 0x7e], [0x20, 0x7e], [0xa0, 0x24f], [0x250, 0x2ff], [0x300, 0x36f],
  [0x370, 0x3ff], [0x400, 0x52f], [0x530, 0x58f], [0x590, 0x6ff], [0x900, 0x97f],
  [0xe00, 0xe7f], [0x10a0, 0x10ff], [0x1100, 0x11ff], [0x1ab0, 0x1aff], [0x1dc0, 0x1dff],
  [0x1e00, 0x1fff], [0x2000, 0x206f], [0x2070, 0x209f], [0x20a0, 0x20ff], [0x2100, 0x214f],
  [0x2150, 0x218f], [0x2190, 0x23ff], [0x2460, 0x24ff], [0x2500, 0x27bf], [0x3000, 0x303f],
  [0x3040, 0x30ff], [0x4e00, 0x9fff], [0x4e00, 0x9fff], [0xac00, 0xd7a3], [0xf900, 0xfaff],
  [0xfb00, 0xfb4f], [0xfe00, 0xfe0f], [0xfe20, 0xfe2f], [0xff00, 0xffef], [0xfff0, 0xffff],
  [0x10000, 0x1ffff], [0x1d400, 0x1d7ff], [0x1f300, 0x1faff], [0x20000, 0x2ffff],
  [0x30000, 0x3ffff], [0xe0000, 0xe01ef], [0xf0000, 0x10ffff], [0x0, 0x10ffff],
  [0x0, 0x10ffff], [0x0, 0x1f],
];

function codePoint() {
  for (;;) {
    const [a, b] = pick(BLOCKS);
    const c = range(a, b);
    if ((c >= 0xd800 && c < 0xe000) || excluded.has(c)) continue;
    return String.fromCodePoint(c);
  }
}

function number() {
  const digits = range(1, 14);
  let s = String(range(1, 9));
  for (let i = 1; i < digits; i++) s += String(rand(10));
  if (rand(4) === 0) s += "." + String(rand(1000));
  if (rand(6) === 0) s = s.replace(/\d/g, (d) => String.fromCodePoint(0x660 + Number(d)));  // Arabic-Indic
  if (rand(6) === 0) s = s.replace(/\d/g, (d) => String.fromCodePoint(0xff10 + Number(d)));  // fullwidth
  return s;
}

function contraction() {
  let c = pick(CONTRACTIONS);
  c = [...c].map((ch) => (rand(2) ? ch.toUpperCase() : ch)).join("");
  if (rand(5) === 0) c = c.replace("'", pick(["\u2019", "`"]));
  return c;
}

function element() {
  switch (rand(12)) {
    case 0:
    case 1:
      return pick(WORDS) + (rand(3) === 0 ? contraction() : "");
    case 2:
      return pick(SPACES).repeat(range(1, rand(4) === 0 ? 40 : 3));
    case 3:
      return number();
    case 4:
      return contraction();
    case 5:
      return pick(PUNCT).repeat(range(1, 3));
    case 6:
      return pick(EMOJI);
    case 7:
      return codePoint() + (rand(3) === 0 ? String.fromCodePoint(range(0x300, 0x36f)) : "");
    default: {
      let s = "";
      for (let i = range(1, 6); i > 0; i--) s += codePoint();
      return s;
    }
  }
}

function randomText() {
  let s = "";
  for (let n = range(0, rand(20) === 0 ? 100 : 30); n > 0; n--) {
    if (rand(3) === 0) s += " ";
    s += element();
  }
  return s;
}

function randomBytes() {
  const parts = [];
  for (let n = range(1, 12); n > 0; n--) {
    if (rand(3) === 0) {
      parts.push(Buffer.from(element(), "utf8"));
    } else {
      const b = Buffer.alloc(range(1, 6));
      for (let i = 0; i < b.length; i++) {
        b[i] = pick([rand(256), range(0x80, 0xbf), range(0xc0, 0xff), 0xed, 0xf4, 0xe0, 0x20]);
      }
      parts.push(b);
    }
  }
  return Buffer.concat(parts);
}

const cases = [];  // {what, bytes: Buffer, text: string (what js-tiktoken encodes)}
function addText(what, text) {
  cases.push({ what, bytes: Buffer.from(text, "utf8"), text });
}
// Not fatal: invalid bytes become U+FFFD; ignoreBOM: a leading U+FEFF stays text (admit, like
// tiktoken, has no notion of a byte order mark).
const decoder = new TextDecoder("utf-8", { ignoreBOM: true });
function addBytes(what, bytes) {
  cases.push({ what, bytes, text: decoder.decode(bytes) });
}

const fixtureNames = fs.readdirSync(args.fixtures).sort();
for (const name of fixtureNames) {
  const text = fs.readFileSync(path.join(args.fixtures, name), "utf8");
  for (const ch of text) {
    if (excluded.has(ch.codePointAt(0))) {
      throw new Error(`fixture ${name} has U+${ch.codePointAt(0).toString(16)}, whose classes ` +
                      "differ between PCRE2 and node: use another character");
    }
  }
  addText(`fixture ${name}`, text);
}
for (const t of ["", " ", "\n", "a", "'s", " 's", "I'm", "WE'LL", "x'S", "123", "1234567",
                 " 1,234.56", "\u00a0\u00a0x", "a\u3000b", "\ufeff\ufeff1", "\u0085x",
                 "trailing   ", "   ", "\t\n \n", "<|endoftext|><|endofprompt|>", "http://x.y/z?q=1"]) {
  addText(`edge ${JSON.stringify(t)}`, t);
}
for (const unit of ["a", " ", "ab", "=", "1", "\n", "日", "é", "😀", "'s"]) {
  for (const n of [95, 96, 97, 200, 300]) addText(`run ${n} x ${JSON.stringify(unit)}`, unit.repeat(n));
}
for (let i = 0; i < args.count; i++) addText(`random #${i}`, randomText());
for (let i = 0; i < Math.max(1, Math.floor(args.count / 10)); i++) addBytes(`bytes #${i}`, randomBytes());

// ---- compare ----
const requests = [];
for (const c of cases) {
  for (const e of ENCODINGS) requests.push(`encode ${e} ${c.bytes.toString("base64")}`);
}
// Model names: the cases of js-tiktoken's getEncodingNameForModel.
const liteSource = fs.readFileSync(path.join(args.jsTiktoken, "dist", "lite.cjs"), "utf8");
const fnStart = liteSource.indexOf("function getEncodingNameForModel");
const fnBody = liteSource.slice(fnStart, liteSource.indexOf("\n}\n", fnStart));
const models = [...fnBody.matchAll(/case "([^"]+)":/g)].map((m) => m[1]);
if (fnStart < 0 || models.length < 50) throw new Error("cannot read js-tiktoken's model table");
const { getEncodingNameForModel } = require(path.join(args.jsTiktoken, "dist", "lite.cjs"));
for (const m of models) requests.push(`model ${m}`);

const answers = runOracle(requests);
let failures = 0;
let compared = 0;
let tokens = 0;
const fail = (msg) => {
  failures++;
  if (failures <= 10) console.error("MISMATCH " + msg);
};
let k = 0;
for (const c of cases) {
  for (const e of ENCODINGS) {
    const fields = answers[k++].split(" ").filter((x) => x !== "");
    const count = Number(fields[0]);
    const ids = fields.slice(1).map(Number);
    const expected = tiktoken[e].encode(c.text, [], []);
    compared++;
    tokens += expected.length;
    if (count !== expected.length || ids.length !== expected.length ||
        ids.some((id, i) => id !== expected[i])) {
      fail(`${e} ${c.what}: text ${JSON.stringify(c.text).slice(0, 300)}\n` +
           `  js-tiktoken (${expected.length}): ${JSON.stringify(expected).slice(0, 300)}\n` +
           `  admit count ${count}, ids (${ids.length}): ${JSON.stringify(ids).slice(0, 300)}`);
    }
  }
}
// Where js-tiktoken's table and tiktoken's (OpenAI's own, which admit follows) disagree:
// tiktoken/model.py maps the 2023 base models to cl100k_base, js-tiktoken to GPT-3's encodings.
const TIKTOKEN_DIFFERS = { "davinci-002": "cl100k_base", "babbage-002": "cl100k_base" };
let modelsChecked = 0;
for (const m of models) {
  const ours = answers[k++];
  const theirs = getEncodingNameForModel(m);
  const expected = TIKTOKEN_DIFFERS[m] ?? (ENCODINGS.includes(theirs) ? theirs : "-");
  modelsChecked++;
  if (ours !== expected) fail(`model ${m}: js-tiktoken ${theirs}, admit ${ours}`);
}

const classNote = Object.entries(excludedByClass).map(([c, n]) => `${c} ${n}`).join(", ");
console.log(`js-tiktoken ${jsVersion} under node ${process.version} (Unicode ` +
            `${process.versions.unicode}), seed ${args.seed} (rerun with ADMIT_TEST_SEED=${args.seed})`);
console.log(`${cases.length} texts (${fixtureNames.length} fixtures, ${args.count} random, ` +
            `${Math.max(1, Math.floor(args.count / 10))} invalid UTF-8) x ${ENCODINGS.length} ` +
            `encodings = ${compared} comparisons, ${tokens} tokens; ${modelsChecked} model names`);
console.log(`code points left out of the random texts (classes differ between PCRE2 and node): ` +
            `${excluded.size}${classNote ? ` (${classNote})` : ""}`);
console.log(`${compared + modelsChecked - failures} of ${compared + modelsChecked} identical ` +
            `(${((Date.now() - started) / 1000).toFixed(1)} s)`);
process.exit(failures === 0 ? 0 : 1);
