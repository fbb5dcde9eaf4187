// /metrics scraped by a real Prometheus (Debian's) during a Chromium call: the series move
// with the traffic, the refusals are counted by code, and every query of the Grafana dashboard
// in deploy/ evaluates on what the server exports.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  startServer, freePort, launch, joinPage, publishWebcam, subscribe, waitEvent, expectPlaying, until,
} from './harness.mjs';

const root = join(import.meta.dirname, '..', '..');

/** Debian's prometheus, scraping `target` every second. */
async function startPrometheus(target) {
  const dir = mkdtempSync(join(tmpdir(), 'webrtcai-prometheus-'));
  const port = await freePort();
  writeFileSync(join(dir, 'prometheus.yml'), [
    'global:',
    '  scrape_interval: 1s',
    '  evaluation_interval: 1s',
    'scrape_configs:',
    '  - job_name: webrtcai',
    `    static_configs: [{ targets: ['${target}'] }]`,
    '',
  ].join('\n'));
  const child = spawn('prometheus', [
    `--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn',
  ], { stdio: ['ignore', 'ignore', 'inherit'] });
  const base = `http://127.0.0.1:${port}`;
  /** The instant vector `expr` evaluates to: [{ metric, value }], value a number. */
  const query = async (expr) => {
    const r = await fetch(`${base}/api/v1/query?query=${encodeURIComponent(expr)}`);
    const body = await r.json();
    if (body.status !== 'success') throw new Error(`${expr}: ${body.error}`);
    return body.data.result.map((s) => ({ metric: s.metric, value: Number(s.value[1]) }));
  };
  await until(() => query('up{job="webrtcai"}').catch(() => []), (r) => r[0]?.value === 1, 20000);
  return {
    query,
    stop() {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const one = async (prom, expr) => (await prom.query(expr))[0]?.value ?? null;

test('Prometheus scrapes /metrics during a call: the series move, refusals are counted, the dashboard evaluates', async () => {
  const metricsPort = await freePort();
  const server = await startServer({ args: ['--metrics-http', `127.0.0.1:${metricsPort}`] });
  const prom = await startPrometheus(`127.0.0.1:${metricsPort}`);
  const browser = await launch();
  try {
    const a = await joinPage(browser.context, server, 'metrics-1', 'alice');
    const b = await joinPage(browser.context, server, 'metrics-1', 'bob');
    const feed = await publishWebcam(a);
    await waitEvent(b, 'feed-published');
    await expectPlaying(b, await subscribe(b, feed));
    // A join with a key that does not exist: refused, and counted by its code.
    const refused = await a.evaluate(async (base) => {
      const { WebRTCai } = await import('/sdk/webrtcai.js');
      return WebRTCai.init({ key: 'wk_does_not_exist', url: base.replace('http', 'ws') + '/ws' })
        .join('metrics-1', { name: 'mallory' })
        .then(() => null, (e) => e.code);
    }, server.base);
    assert.ok(refused, 'the unknown key was refused');

    const forwarded = 'sum(webrtcai_relay_rtp_forwarded_total)';
    const first = await until(() => one(prom, forwarded), (v) => v > 0, 15000);
    const later = await until(() => one(prom, forwarded), (v) => v > first + 50, 15000);
    assert.equal(await until(() => one(prom, 'webrtcai_signalling_participants'), (v) => v === 2, 10000), 2);
    assert.equal(await one(prom, 'webrtcai_signalling_sessions'), 1);
    assert.equal(await one(prom, 'sum(webrtcai_relay_participants)'), 2);
    assert.ok(await one(prom, 'webrtcai_signalling_websockets') >= 2);
    assert.ok(await one(prom, 'webrtcai_signalling_joins_total') >= 2);
    const errors = await until(() => prom.query('webrtcai_signalling_errors_total'), (r) => r.length > 0, 10000);
    assert.ok(errors.some((s) => s.value >= 1), JSON.stringify(errors));
    assert.ok(await one(prom, 'webrtcai_signalling_db_read_seconds_count') >= 2, 'each join read the database');
    const p99 = await until(
      () => one(prom, 'histogram_quantile(0.99, sum by (le) (rate(webrtcai_relay_forwarding_delay_seconds_bucket[5s])))'),
      (v) => v > 0 && v < 1, 15000,
    );
    const load = await until(() => one(prom, 'sum(rate(webrtcai_relay_core_cpu_seconds_total[5s]))'), (v) => v > 0, 15000);
    const estimate = await until(
      () => one(prom, 'histogram_quantile(0.5, sum by (le) (webrtcai_relay_subscriber_estimate_bytes_per_second_bucket)) * 8'),
      (v) => v > 0, 15000,
    );
    const rate = await one(prom, 'sum(rate(webrtcai_relay_rtp_forwarded_total[5s]))');
    console.log(`metrics: forwarded ${first} then ${later}; ${rate?.toFixed(0)} copies/s; forwarding p99 ${(p99 * 1e3).toFixed(3)} ms; relay load ${(load * 100).toFixed(1)} % of a core; median estimate ${(estimate / 1e3).toFixed(0)} kbit/s; errors ${errors.map((s) => `${s.metric.code}=${s.value}`).join(' ')}`);

    // Every query of the dashboard evaluates; those outside a cluster's (edge) give data.
    const dashboard = JSON.parse(readFileSync(join(root, 'deploy', 'grafana', 'webrtcai.json'), 'utf8'));
    const exprs = dashboard.panels.flatMap((p) => p.targets.map((t) => ({ panel: p.title, expr: t.expr.replaceAll('$__rate_interval', '1m') })));
    assert.ok(exprs.length >= 15);
    const empty = [];
    for (const { panel, expr } of exprs) {
      if (expr.includes('webrtcai_edge_')) {
        await prom.query(expr); // it parses and evaluates; a node alone has no trunks
        continue;
      }
      // A rate() needs two scrapes of its series (the refusals' began a moment ago).
      const result = await until(() => prom.query(expr), (r) => r.length > 0, 10000).catch(() => []);
      if (result.length === 0) empty.push(`${panel}: ${expr}`);
    }
    assert.deepEqual(empty, [], 'dashboard queries without data');
  } finally {
    await browser.close();
    prom.stop();
    server.stop();
  }
});
