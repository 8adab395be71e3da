#!/usr/bin/env node
// admitd's OpenAI-compatible gateway (docs/proxy.md) driven by the real OpenAI client: the npm
// package openai, at the version scripts/openai/package-lock.json pins (scripts/setup installs
// it outside the tree). Run by ctest as admitd_gateway_openai. It starts admit-provider-sim as
// the upstream (hidden limit: 4 requests per minute) and admitd in front of it, both on free
// ports, with a config in a temp dir, and checks what a client of OpenAI's API sees:
//   - a chat completion: the answer and its usage;
//   - a streamed chat completion: the text chunk by chunk, the usage in the last chunk (the
//     client did not ask for it: admitd adds stream_options.include_usage);
//   - the caller's budget charged the usage the stream reported (GET /v1/stats; a month
//     window, so nothing refills during the test);
//   - a refusal by the caller's limits surfacing as OpenAI.RateLimitError (status 429,
//     retry-after, code rate_limit_exceeded), and the other errors as the client's classes;
//   - the upstream's hidden limit learned from its headers: admitd answers 429 itself once
//     its learned share is spent, and the upstream never answers one;
//   - client.models.list(): the configured models.
// No timing assertions: waits are for a condition, bounded.
//
// Usage: node gateway_openai_test.mjs --admitd PATH --sim PATH --openai DIR [--version V]
//   DIR: where scripts/setup installed the package (its node_modules/openai); V: the version
//   pinned, checked against the one found. Exits 77 (skipped) when the package is missing.
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import assert from "node:assert/strict";
import { test, after } from "node:test";

const SKIP = 77;

function parseArgs(argv) {
  const args = {};
  for (let i = 2; i < argv.length; i += 2) args[argv[i].replace(/^--/, "")] = argv[i + 1];
  for (const k of ["admitd", "sim", "openai"]) {
    if (!args[k]) {
      console.error("usage: gateway_openai_test.mjs --admitd PATH --sim PATH --openai DIR [--version V]");
      process.exit(2);
    }
  }
  return args;
}
const args = parseArgs(process.argv);

// ---- the client: the pinned package, or skip saying why ----
const pkgDir = path.join(args.openai, "node_modules", "openai");
let found;
try {
  found = JSON.parse(fs.readFileSync(path.join(pkgDir, "package.json"), "utf8")).version;
} catch {
  console.log(`admitd_gateway_openai: skipped, the npm package openai is not in ${args.openai} ` +
              "(run scripts/setup)");
  process.exit(SKIP);
}
if (args.version && found !== args.version) {
  console.log(`admitd_gateway_openai: skipped, ${pkgDir} is openai ${found}, ` +
              `scripts/openai pins ${args.version} (run scripts/setup)`);
  process.exit(SKIP);
}
const { default: OpenAI } = await import(pathToFileURL(path.join(pkgDir, "index.mjs")).href);
console.log(`# openai ${found} (${pkgDir}), node ${process.version}`);

// ---- the servers ----
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "admit-gateway-openai-"));
const children = [];

// start(NAME, BIN, ARGS): spawns BIN and resolves with the URL its first stdout line names
// ("listening on http://HOST:PORT"), within 10 s. Its stderr goes to TMP/NAME.log.
function start(name, bin, argv) {
  const log = fs.openSync(path.join(tmp, `${name}.log`), "w");
  const child = spawn(bin, argv, { stdio: ["ignore", "pipe", log] });
  fs.closeSync(log);
  children.push(child);
  return new Promise((resolve, reject) => {
    let out = "";
    const fail = (why) => {
      clearTimeout(timer);
      let stderr = "";
      try { stderr = fs.readFileSync(path.join(tmp, `${name}.log`), "utf8"); } catch {}
      reject(new Error(`${name} did not start: ${why}\nstdout: ${out}\nstderr: ${stderr}`));
    };
    const timer = setTimeout(() => fail("no 'listening on' line within 10 s"), 10000);
    child.on("error", (e) => fail(e.message));
    child.on("exit", (code, signal) => fail(`exited (${code ?? signal})`));
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (d) => {
      out += d;
      const nl = out.indexOf("\n");
      if (nl < 0) return;
      const m = /^listening on (http:\/\/\S+)$/.exec(out.slice(0, nl));
      if (!m) return fail(`unexpected first line: ${out.slice(0, nl)}`);
      clearTimeout(timer);
      child.removeAllListeners("exit");
      child.stdout.resume();  // keep draining whatever else it prints
      resolve(m[1]);
    });
  });
}

// Stops every server (SIGTERM, then SIGKILL after 5 s) and removes the temp dir; also on failure.
async function stopAll() {
  await Promise.all(children.map((c) => new Promise((resolve) => {
    if (c.exitCode !== null || c.signalCode !== null) return resolve();
    const kill = setTimeout(() => c.kill("SIGKILL"), 5000);
    c.once("exit", () => { clearTimeout(kill); resolve(); });
    c.kill("SIGTERM");
  })));
  children.length = 0;
  fs.rmSync(tmp, { recursive: true, force: true });
}
after(stopAll);
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.once(sig, () => {
    for (const c of children) c.kill("SIGKILL");
    fs.rmSync(tmp, { recursive: true, force: true });
    process.exit(1);
  });
}
process.once("exit", () => { for (const c of children) c.kill("SIGKILL"); });

async function getJson(url) {
  const r = await fetch(url, { signal: AbortSignal.timeout(10000) });
  assert.equal(r.status, 200, `GET ${url}: ${r.status} ${await r.clone().text()}`);
  return r.json();
}
// used(ENTITY, LIMIT): how much of LIMIT on gpt-4o-mini ENTITY has spent (GET /v1/stats).
async function used(admitd, entity, limit) {
  const b = await getJson(`${admitd}/v1/stats?entity=${entity}&resource=gpt-4o-mini`);
  const l = b.stats[0].limits.find((x) => x.entity === entity && x.limit === limit);
  assert.ok(l, `no limit ${limit} of ${entity} in ${JSON.stringify(b)}`);
  return l.capacity - l.available;
}
// waitFor(F): polls F until it returns true, every 50 ms, up to 5 s; then fails with WHAT.
async function waitFor(what, f) {
  for (let i = 0; i < 100; i++) {
    if (await f()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail(`still not true after 5 s: ${what}`);
}
const header = (headers, name) =>
  typeof headers?.get === "function" ? headers.get(name) : headers?.[name];
const words = (text) => text.split(/\s+/).filter((w) => w.length > 0).length;

const ALICE = "alice-key-0123456789";
const BOB = "bob-key-000111222333";
const hello = [{ role: "user", content: "Hello there" }];

test("admitd's gateway with the openai client", async (t) => {
  const sim = await start("sim", args.sim, ["--rpm", "4", "--seed", "7"]);
  fs.writeFileSync(path.join(tmp, "gateway.yaml"), `
resources:
  gpt-4o-mini:
    - {name: tokens, window: month, limit: 1000000}
entities:
  team:
    limits:
      gpt-4o-mini: [{name: requests, window: month, limit: 1}]
  bob:
    parent: team
gateway:
  deadline_ms: 1500
  callers:
    - {key: ${ALICE}, entity: alice}
    - {key: ${BOB}, entity: bob}
  upstreams:
    - {name: sim, base_url: "${sim}/v1", api_key: sim-key-1, models: [gpt-4o-mini, gpt-4o]}
    - {name: sim-embed, base_url: "${sim}/v1", api_key: sim-key-2, models: [text-embedding-3-small]}
    - {name: nowhere, base_url: "http://127.0.0.1:1/v1", models: [other-model], max_attempts: 1}
`);
  const admitd = await start("admitd", args.admitd,
                             ["--config", path.join(tmp, "gateway.yaml"), "--listen", "127.0.0.1:0"]);
  console.log(`# admit-provider-sim ${sim}, admitd ${admitd}`);
  const client = (apiKey) => new OpenAI({ baseURL: `${admitd}/v1`, apiKey, maxRetries: 0, timeout: 20000 });
  const alice = client(ALICE);
  const simStats = () => getJson(`${sim}/sim/stats`);
  let upstreamCalls = 0;  // the requests admitd forwarded, all answered 200

  await t.test("chat completion: the answer and its usage", async () => {
    const r = await alice.chat.completions.create({ model: "gpt-4o-mini", messages: hello, max_tokens: 40 });
    upstreamCalls++;
    assert.equal(r.object, "chat.completion");
    assert.equal(r.choices.length, 1);
    assert.equal(r.choices[0].message.role, "assistant");
    const text = r.choices[0].message.content;
    assert.equal(typeof text, "string");
    assert.ok(text.length > 0, "an empty answer");
    const u = r.usage;
    assert.ok(u.prompt_tokens > 0 && u.completion_tokens > 0, JSON.stringify(u));
    assert.equal(u.total_tokens, u.prompt_tokens + u.completion_tokens);
    assert.equal(words(text), u.completion_tokens, "the sim answers one word per token");
    // The caller is charged what the upstream reported, not admitd's estimate (which reserved
    // the prompt + max_tokens 40).
    await waitFor(`alice charged ${u.total_tokens}`, async () => (await used(admitd, "alice", "tokens")) === u.total_tokens);
  });

  await t.test("streamed chat completion: the text arrives, the last chunk has the usage, and it is charged", async () => {
    const before = await used(admitd, "alice", "tokens");
    const stream = await alice.chat.completions.create({
      model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }], max_tokens: 8, stream: true,
    });
    upstreamCalls++;
    let text = "";
    let contentChunks = 0;
    const chunks = [];
    for await (const chunk of stream) {
      chunks.push(chunk);
      assert.equal(chunk.object, "chat.completion.chunk");
      const delta = chunk.choices[0]?.delta?.content;
      if (delta) { text += delta; contentChunks++; }
    }
    assert.ok(chunks.length >= 3, `${chunks.length} chunks`);
    assert.ok(text.trim().length > 0, "no text streamed");
    const last = chunks[chunks.length - 1];
    // The client did not ask for include_usage: admitd added it, so the last chunk is the
    // usage chunk, with no choices.
    assert.deepEqual(last.choices, []);
    const u = last.usage;
    assert.ok(u, `no usage in the last chunk: ${JSON.stringify(last)}`);
    assert.equal(u.total_tokens, u.prompt_tokens + u.completion_tokens);
    assert.equal(u.completion_tokens, words(text), "the sim streams one word per token");
    assert.ok(contentChunks >= 1);
    assert.ok(chunks.slice(0, -1).every((c) => !c.usage), "usage before the last chunk");
    // Charged the stream's reported usage once it ended (the month window refills nothing).
    await waitFor(`alice charged ${before} + ${u.total_tokens}`,
                  async () => (await used(admitd, "alice", "tokens")) === before + u.total_tokens);
  });

  await t.test("the caller's limit refuses: OpenAI.RateLimitError with retry-after and rate_limit_exceeded", async () => {
    const bob = client(BOB);
    const first = await bob.chat.completions.create({ model: "gpt-4o-mini", messages: hello, max_tokens: 40 });
    upstreamCalls++;
    assert.ok(first.usage.total_tokens > 0);
    const accepted = (await simStats()).accepted;
    const err = await bob.chat.completions.create({ model: "gpt-4o-mini", messages: hello, max_tokens: 40 })
      .then(() => assert.fail("bob's second request was not refused (team: 1 request a month)"), (e) => e);
    assert.ok(err instanceof OpenAI.RateLimitError, `not a RateLimitError: ${err}`);
    assert.ok(err instanceof OpenAI.APIError);
    assert.equal(err.status, 429);
    assert.equal(err.code, "rate_limit_exceeded");
    assert.equal(err.type, "requests");
    assert.match(err.message, /team/, "the refusal names the team's limit");
    const retryAfter = header(err.headers, "retry-after");
    assert.match(String(retryAfter), /^[0-9]+$/, `retry-after: ${retryAfter}`);
    assert.equal((await simStats()).accepted, accepted, "the refused request reached the upstream");
    assert.equal(await used(admitd, "bob", "tokens"), first.usage.total_tokens, "the refusal was charged");
  });

  await t.test("the other errors: the client's classes", async () => {
    const wrong = client("wrong-key-0123456789");
    let err = await wrong.chat.completions.create({ model: "gpt-4o-mini", messages: hello }).then(() => null, (e) => e);
    assert.ok(err instanceof OpenAI.AuthenticationError, `not an AuthenticationError: ${err}`);
    assert.equal(err.status, 401);
    assert.equal(err.code, "invalid_api_key");
    err = await alice.chat.completions.create({ model: "no-such-model", messages: hello }).then(() => null, (e) => e);
    assert.ok(err instanceof OpenAI.NotFoundError, `not a NotFoundError: ${err}`);
    assert.equal(err.code, "model_not_found");
  });

  await t.test("embeddings: the client's default base64 vectors, decoded", async () => {
    // Another upstream key: the simulator's buckets are per key, so this spends nothing of
    // the chat upstream's hidden limit.
    const r = await alice.embeddings.create({
      model: "text-embedding-3-small", input: ["alpha beta", "gamma"], dimensions: 4,
    });
    upstreamCalls++;
    assert.equal(r.data.length, 2);
    for (const d of r.data) {
      assert.equal(d.embedding.length, 4, "the client decodes the base64 it asked for");
      for (const x of d.embedding) assert.ok(x >= -1 && x < 1, `a component out of range: ${x}`);
    }
    assert.ok(r.usage.prompt_tokens > 0);
    assert.equal(r.usage.total_tokens, r.usage.prompt_tokens);
  });

  await t.test("client.models.list(): the configured models", async () => {
    const ids = [];
    for await (const m of alice.models.list()) {
      assert.equal(m.object, "model");
      ids.push(m.id);
    }
    assert.deepEqual(ids.sort(), ["gpt-4o", "gpt-4o-mini", "other-model", "text-embedding-3-small"]);
  });

  await t.test("the upstream's hidden limit is learned: admitd refuses, the upstream never does", async () => {
    // admit-provider-sim allows 4 requests a minute and says so in x-ratelimit-* headers.
    // admitd learns the limit from the first answer and paces the upstream at 90% of it
    // (floor(4 * 0.9) = 3 at once, refilled at 4 a minute): the margin keeps admitd's view,
    // read from rounded headers a moment late, below the provider's bucket, so the provider
    // is never asked for a request it would refuse. The requests above spent that share;
    // the next ones wait for room up to deadline_ms (1.5 s, less than the 15 s a request
    // takes to refill) and then get admitd's own 429. (How many pass depends on how long the
    // test took so far, as both buckets refill: not checked; that the upstream refused none is.)
    let refused = null;
    for (let i = 0; i < 10 && !refused; i++) {
      try {
        await alice.chat.completions.create({ model: "gpt-4o-mini", messages: hello, max_tokens: 40 });
        upstreamCalls++;
      } catch (e) {
        refused = e;
      }
    }
    assert.ok(refused, "10 requests in a row were admitted past a hidden limit of 4 a minute");
    assert.ok(refused instanceof OpenAI.RateLimitError, `not a RateLimitError: ${refused}`);
    assert.equal(refused.status, 429);
    assert.equal(refused.code, "rate_limit_exceeded");
    assert.match(String(header(refused.headers, "retry-after")), /^[0-9]+$/);
    const s = await simStats();
    console.log(`# the upstream accepted ${s.accepted} and rejected ${s.rejected}; admitd refused ` +
                `request ${upstreamCalls + 1}: ${refused.message}`);
    assert.equal(s.rejected, 0, `the upstream answered 429: ${JSON.stringify(s)}`);
    assert.equal(s.accepted, upstreamCalls, `the upstream's count: ${JSON.stringify(s)}`);
  });
});
