// A journey's diagram artifact in the Prefect UI, in headless Debian chromium driven
// by playwright-core (installed into .ci/node by .ci/install-tools.sh).
//
//   node tests/ui/journey_artifact.mjs PAGE.json
//
// tests/test_prefect_ui_journey.py writes PAGE (the server's address, the artifact's
// key and what its drawing must say) and reads the one JSON line this script prints:
// {"drawn": true, "ui": "/v2", "outside_requests": [...]}. The operator opens the UI's
// front page (Prefect sends a browser to its default UI from there), then the
// journey's artifact by its key; the flowchart must be drawn (an SVG holding every
// step's label and counts), not shown as its source. Every check waits for an element
// (playwright's auto-waiting, bounded by TIMEOUT_MS); nothing sleeps. A failed check
// exits non-zero with what was missing and a screenshot in PAGE.failure_dir.
//
// Only loopback is reachable: every other request is aborted and reported.

import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const require = createRequire(path.join(repo, '.ci', 'node', 'package.json'));
const { chromium } = require('playwright-core');

const TIMEOUT_MS = 30_000;
const spec = JSON.parse(readFileSync(process.argv[2], 'utf8'));
let step = 'start';

const context = await chromium.launchPersistentContext(spec.user_data_dir, {
  executablePath: spec.chromium,
  headless: true,
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
  viewport: { width: 1400, height: 1200 },
  locale: 'en-US',
});
const outside = [];
await context.route('**/*', (route) => {
  const url = new URL(route.request().url());
  if (['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname)) return route.continue();
  outside.push(url.href);
  return route.abort();
});
const page = context.pages()[0] ?? (await context.newPage());
page.setDefaultTimeout(TIMEOUT_MS);

try {
  step = 'the UI front page';
  await page.goto(`${spec.ui_url}/`);
  await page.waitForLoadState('networkidle');
  // the UI the server sent this browser to: its base path ('' or '/v2')
  const ui = new URL(page.url()).pathname.replace(/\/(dashboard|runs)?\/?$/, '');

  step = `the artifact ${spec.artifact_key}`;
  await page.goto(`${spec.ui_url}${ui}/artifacts/key/${spec.artifact_key}`);
  step = 'the artifact\'s newest version';
  await page.getByRole('link', { name: /^[0-9a-f]{8}$/ }).first().click();
  await page.waitForURL(/\/artifacts\/artifact\//);
  const drawing = page.locator('svg').filter({ hasText: spec.entered }).first();
  step = `the flowchart, drawn, with "${spec.entered}"`;
  await drawing.waitFor({ state: 'visible' });
  for (const text of [...spec.labels, ...spec.counts]) {
    step = `the flowchart: "${text}"`;
    await drawing.getByText(text, { exact: false }).first().waitFor({ state: 'attached' });
  }
  // the whole drawing in one picture: a viewport as tall as the page
  const height = await page.evaluate(() => document.documentElement.scrollHeight);
  await page.setViewportSize({ width: 1400, height });
  await page.waitForLoadState('networkidle');
  await page.screenshot({ path: spec.screenshot, animations: 'disabled' });

  console.log(JSON.stringify({ drawn: true, ui, outside_requests: outside }));
  await context.close();
} catch (error) {
  const name = `failure-${step.replace(/[^a-z0-9]+/gi, '-').slice(0, 60)}.png`;
  await page.screenshot({ path: path.join(spec.failure_dir, name), fullPage: true }).catch(() => {});
  await page.content().then((html) => writeFileSync(
    path.join(spec.failure_dir, name.replace(/png$/, 'html')), html)).catch(() => {});
  console.error(`${step}: ${error.message.split('\n')[0]} (screenshot: ${name}; page: ${page.url()})`);
  await context.close();
  process.exit(1);
}
