// What the browser scripts of tests/ui share: Debian chromium through playwright-core
// (installed into .ci/node by .ci/install-tools.sh), a page that may reach only
// loopback (every other request is aborted and listed), and how a failed check is
// reported (what was missing, a screenshot and the page's HTML).

import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const require = createRequire(path.join(repo, '.ci', 'node', 'package.json'));
export const { chromium } = require('playwright-core');

/** How long any one check waits for what it looks for. */
export const TIMEOUT_MS = 30_000;

const LOOPBACK = ['127.0.0.1', 'localhost', '[::1]'];

/** Let ``context`` reach loopback only; every other URL it asks for goes into ``outside``. */
export async function loopbackOnly(context, outside) {
  await context.route('**/*', (route) => {
    const url = new URL(route.request().url());
    if (LOOPBACK.includes(url.hostname)) return route.continue();
    outside.push(url.href);
    return route.abort();
  });
}

/** An operator's browser: a persistent profile at ``spec.user_data_dir``, loopback only.
 * Returns {context, page, outside}. */
export async function operatorBrowser(spec, options) {
  const context = await chromium.launchPersistentContext(spec.user_data_dir, {
    executablePath: spec.chromium,
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
    locale: 'en-US',
    ...options,
  });
  const outside = [];
  await loopbackOnly(context, outside);
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(TIMEOUT_MS);
  return { context, page, outside };
}

/** Report the check ``step`` that failed with ``error``: a screenshot and the HTML of
 * ``page`` in ``failureDir``, one line on stderr; then close and exit 1. */
export async function failed(context, page, failureDir, step, error) {
  const name = `failure-${step.replace(/[^a-z0-9]+/gi, '-').slice(0, 60)}.png`;
  await page.screenshot({ path: path.join(failureDir, name), fullPage: true }).catch(() => {});
  await page.content().then((html) => writeFileSync(
    path.join(failureDir, name.replace(/png$/, 'html')), html)).catch(() => {});
  console.error(`${step}: ${error.message.split('\n')[0]} (screenshot: ${name}; page: ${page.url()})`);
  await context.close();
  process.exit(1);
}
