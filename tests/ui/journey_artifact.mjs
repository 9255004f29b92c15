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

import { readFileSync } from 'node:fs';

import { failed, operatorBrowser } from './browser.mjs';

const spec = JSON.parse(readFileSync(process.argv[2], 'utf8'));
let step = 'start';

const { context, page, outside } = await operatorBrowser(spec, {
  viewport: { width: 1400, height: 1200 },
});

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
  await failed(context, page, spec.failure_dir, step, error);
}
