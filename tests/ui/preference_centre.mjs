// The preference centre as a customer uses it, in headless Debian chromium driven by
// playwright-core (installed into .ci/node by .ci/install-tools.sh), by keyboard alone.
//
//   node tests/ui/preference_centre.mjs SPEC.json
//
// tests/service/test_preference_centre_browser.py writes SPEC: the chromium binary,
// where screenshots go, and a list of visits, each a page URL, a viewport (phone 390 px
// or desktop) and the words the page must show in its language. For each visit this
// script opens the page, checks it has no horizontal scroll, screenshots it, then with
// Tab, Space, the arrow keys and Enter only: turns marketing email off, picks "fewer",
// saves, and waits for the confirmation (screenshot too). It prints one JSON line:
// {"visits": [{"name", "scroll_width", "focus_path", "confirmed"}], "outside_requests"}.
// Nothing sleeps: every check waits for an element or text (bounded by TIMEOUT_MS).

import { readFileSync } from 'node:fs';
import path from 'node:path';

import { chromium, loopbackOnly, TIMEOUT_MS } from './browser.mjs';

const MAX_TABS = 40;
const spec = JSON.parse(readFileSync(process.argv[2], 'utf8'));

const browser = await chromium.launch({
  executablePath: spec.chromium,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
});
const outside = [];
const visits = [];
try {
  for (const visit of spec.visits) {
    const context = await browser.newContext({
      viewport: visit.viewport,
      isMobile: visit.mobile,
      hasTouch: visit.mobile,
      deviceScaleFactor: visit.mobile ? 2 : 1,
      locale: visit.browser_locale,
    });
    await loopbackOnly(context, outside);
    const page = await context.newPage();
    page.setDefaultTimeout(TIMEOUT_MS);
    await page.goto(visit.url);
    for (const text of visit.must_show) {
      await page.getByText(text, { exact: false }).first().waitFor({ state: 'visible' });
    }
    const scrollWidth = await page.evaluate(() => document.documentElement.scrollWidth);
    await page.screenshot({ path: path.join(spec.screenshots_dir, `${visit.name}.png`), fullPage: true });

    // keyboard only: Tab to the marketing email box, Space to untick it
    const focusPath = [];
    async function tabTo(check) {
      for (let i = 0; i < MAX_TABS; i++) {
        await page.keyboard.press('Tab');
        const here = await page.evaluate(() => {
          const el = document.activeElement;
          return { tag: el.tagName, name: el.name || '', value: el.value || '', type: el.type || '' };
        });
        focusPath.push(`${here.tag}:${here.name}:${here.value}`);
        if (check(here)) return here;
      }
      throw new Error(`${visit.name}: Tab never reached the wanted control; went ${focusPath.join(' > ')}`);
    }
    await tabTo((el) => el.name === 'c.marketing.email');
    await page.keyboard.press('Space');
    // the cadence radios: Tab lands on the checked one, ArrowDown moves to "fewer"
    await tabTo((el) => el.name === 'cadence');
    await page.keyboard.press('ArrowDown');
    const cadence = await page.evaluate(() => document.activeElement.value);
    if (cadence !== 'fewer') throw new Error(`${visit.name}: ArrowDown chose ${cadence}`);
    await tabTo((el) => el.tag === 'BUTTON' && el.value === 'save');
    await page.keyboard.press('Enter');
    await page.getByText(visit.confirmed, { exact: false }).first().waitFor({ state: 'visible' });
    if (visit.confirmation_shot) {
      await page.screenshot({
        path: path.join(spec.screenshots_dir, `${visit.name}-saved.png`), fullPage: true,
      });
    }
    visits.push({ name: visit.name, scroll_width: scrollWidth, focus_path: focusPath, confirmed: true });
    await context.close();
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify({ visits, outside_requests: outside }));
