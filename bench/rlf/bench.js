// rate-limiter-flexible's RateLimiterRedis.consume over ioredis: the yardstick for admit's
// RedisStore in scripts/bench-redis. Keeps --inflight consume() promises in flight for
// --duration seconds on keys "user-<k>" (k rotating over 1000), after a warm-up, and prints
// one JSON line: {"ops": ..., "p50_us": ..., "p99_us": ..., ...}.
// --limits 2: two limits per request (requests and tokens, as admit's acquire), the way
// rate-limiter-flexible documents it: a RateLimiterUnion of two RateLimiterRedis, whose
// consume() runs both consumes concurrently (not atomically: a rejection by one does not
// undo the other).
//   node bench.js --port PORT [--host 127.0.0.1] [--inflight 64] [--duration 5] [--warmup S]
//                 [--limits 1|2]
'use strict';

const Redis = require('ioredis');
const { RateLimiterRedis, RateLimiterUnion } = require('rate-limiter-flexible');

function parseArgs(argv) {
  const a = { host: '127.0.0.1', port: 6379, inflight: 64, duration: 5, warmup: -1, limits: 1 };
  for (let i = 2; i < argv.length; i++) {
    const k = argv[i];
    const v = argv[++i];
    if (v === undefined) throw new Error(`${k} needs a value`);
    if (k === '--host') a.host = v;
    else if (k === '--port') a.port = Number(v);
    else if (k === '--inflight') a.inflight = Number(v);
    else if (k === '--duration') a.duration = Number(v);
    else if (k === '--warmup') a.warmup = Number(v);
    else if (k === '--limits') a.limits = Number(v);
    else throw new Error(`unknown argument ${k}`);
  }
  if (!(a.inflight >= 1) || !(a.duration > 0)) throw new Error('bad --inflight or --duration');
  if (a.limits !== 1 && a.limits !== 2) throw new Error('--limits must be 1 or 2');
  if (a.warmup < 0) a.warmup = Math.min(1, a.duration / 5);
  return a;
}

async function main() {
  const a = parseArgs(process.argv);
  const client = new Redis({ host: a.host, port: a.port, enableOfflineQueue: true, lazyConnect: true });
  await client.connect();
  // Limits so large nothing is denied: 1e12 points per 60 s (fixed-window counters).
  const make = (keyPrefix) => new RateLimiterRedis({
    storeClient: client, keyPrefix, points: 1e12, duration: 60,
  });
  const limiter = a.limits === 1 ? make('rlf') : new RateLimiterUnion(make('rlf-rpm'), make('rlf-tpm'));

  const entities = Array.from({ length: 1000 }, (_, i) => `user-${i}`);
  let measuring = false;
  let stop = false;
  const lat = [];
  let denied = 0;
  let errors = 0;
  let firstError = null;

  async function worker(t) {
    let k = t;
    while (!stop) {
      const key = entities[k % entities.length];
      k += a.inflight;
      const counted = measuring;
      const t0 = process.hrtime.bigint();
      try {
        await limiter.consume(key, 1);
      } catch (e) {
        if (e instanceof Error) {
          errors++;
          if (!firstError) firstError = e.message;
          continue;
        }
        denied++;  // a RateLimiterRes: over the limit
      }
      const t1 = process.hrtime.bigint();
      if (counted && !stop) lat.push(Number(t1 - t0));
    }
  }

  const sleep = (s) => new Promise((r) => setTimeout(r, s * 1000));
  const workers = Array.from({ length: a.inflight }, (_, t) => worker(t));
  await sleep(a.warmup);
  measuring = true;
  const start = process.hrtime.bigint();
  await sleep(a.duration);
  stop = true;
  const end = process.hrtime.bigint();
  await Promise.all(workers);
  client.disconnect();

  const secs = Number(end - start) / 1e9;
  lat.sort((x, y) => x - y);
  const pct = (q) => (lat.length ? lat[Math.min(lat.length - 1, Math.round(q * (lat.length - 1)))] / 1000 : 0);
  if (firstError) process.stderr.write(`rlf bench: ${errors} failed consumes, first: ${firstError}\n`);
  const out = {
    ops: Number((lat.length / secs).toFixed(1)),
    p50_us: Number(pct(0.5).toFixed(1)),
    p99_us: Number(pct(0.99).toFixed(1)),
    inflight: a.inflight,
    limits: a.limits,
    duration_s: a.duration,
    count: lat.length,
    denied,
    errors,
    versions: {
      'rate-limiter-flexible': require('rate-limiter-flexible/package.json').version,
      ioredis: require('ioredis/package.json').version,
      node: process.versions.node,
    },
  };
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e) => {
  process.stderr.write(`rlf bench: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
