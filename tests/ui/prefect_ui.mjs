// The Prefect UI as an operator sees it, in headless Debian chromium driven by
// playwright-core (installed into .ci/node by .ci/install-tools.sh).
//
//   node tests/ui/prefect_ui.mjs SPEC.json
//
// tests/test_prefect_ui.py writes SPEC (the server's address and what each
// page must show, taken from prefect.yaml and the API) and reads the one JSON
// line this script prints: {"submitted_run_id": ..., "outside_requests": [...]}.
// Every check waits for an element or text to appear (playwright's
// auto-waiting, bounded by TIMEOUT_MS); nothing sleeps. A failed check exits
// non-zero with what was missing and a screenshot of the page in
// SPEC.failure_dir.
//
// Only loopback is reachable: every other request is aborted and reported.

import { readFileSync } from 'node:fs';
import path from 'node:path';

import { failed, operatorBrowser } from './browser.mjs';

const spec = JSON.parse(readFileSync(process.argv[2], 'utf8'));
let step = 'start';

const { context, page, outside } = await operatorBrowser(spec, {
  viewport: { width: 1600, height: 1000 },
  // times as an operator in the business time zone of prefect.yaml sees them
  timezoneId: spec.time_zone,
});

/** A screenshot for docs/operators.md, once the page has fetched what it shows. */
async function snap(name) {
  await page.waitForLoadState('networkidle');
  await page.screenshot({ path: path.join(spec.screenshots_dir, name), animations: 'disabled' });
}

/** Wait until `text` is visible on the page (or inside `within`). */
async function sees(text, within = page) {
  await within.getByText(text, { exact: false }).first().waitFor({ state: 'visible' });
}

try {
  // --- the deployments page: every deployment of prefect.yaml, with its schedule
  step = 'deployments page';
  await page.setViewportSize({ width: 1920, height: 1000 }); // room for every schedule's label
  await page.goto(`${spec.ui_url}/deployments`);
  for (const { name, schedule } of spec.deployments) {
    const row = page.locator('tr').filter({ hasText: name }).first();
    step = `deployments page: row "${name}"`;
    await row.waitFor();
    if (schedule) {
      // visible, not folded away behind a "+1"
      step = `deployments page: row "${name}" shows the schedule "${schedule}"`;
      await row.getByText(schedule, { exact: true }).first().waitFor({ state: 'visible' });
    }
  }
  step = `deployments page: the activity of "${spec.deployment.name}" shows its run`;
  await page.locator('tr').filter({ hasText: spec.deployment.name })
    .locator('.flow-runs-bar-chart__bar-flow-run').first().waitFor();
  await snap('ui-deployments.png');
  await page.setViewportSize({ width: 1600, height: 1000 });

  // --- one deployment: its schedule, paused and resumed with its switch
  step = 'deployment page';
  await page.goto(`${spec.ui_url}/deployments/deployment/${spec.deployment.id}`);
  await sees(spec.deployment.name);
  await sees(spec.deployment.schedule);
  // the switch beside the schedule pauses it; the server keeps that across a reload
  const scheduleSwitch = (checked) => page.locator('div').filter({ hasText: spec.deployment.schedule })
    .locator(`[role="switch"][aria-checked="${checked}"]`).first();
  step = 'deployment page: the schedule switch is on';
  await scheduleSwitch(true).waitFor();
  step = 'deployment page: switch the schedule off (pause)';
  await scheduleSwitch(true).click();
  await scheduleSwitch(false).waitFor();
  await page.reload();
  await scheduleSwitch(false).waitFor();
  step = 'deployment page: switch the schedule on again (resume)';
  await scheduleSwitch(false).click();
  await scheduleSwitch(true).waitFor();
  await page.reload();
  await scheduleSwitch(true).waitFor();
  await snap('ui-deployment.png');
  // the schedule's label names no zone; the deployment's description does
  step = 'deployment page: Description tab';
  await page.getByRole('tab', { name: 'Description' }).or(page.getByText('Description', { exact: true }))
    .first().click();
  step = `deployment page: the description says the zone ("${spec.deployment.zone_said}")`;
  await sees(spec.deployment.zone_said);

  // --- the completed run: state, logs, then its summary artifact
  step = 'flow run page';
  await page.goto(`${spec.ui_url}/runs/flow-run/${spec.completed_run.id}`);
  await sees(spec.completed_run.name);
  await sees('Completed');
  for (const line of spec.completed_run.log_lines) {
    step = `flow run page: log line "${line}"`;
    await sees(line);
  }
  await page.setViewportSize({ width: 1600, height: 1400 }); // room for the logs
  await snap('ui-flow-run.png');
  await page.setViewportSize({ width: 1600, height: 1000 });

  step = 'flow run page: Artifacts tab';
  await page.getByText('Artifacts', { exact: true }).first().click();
  await page.getByText(spec.completed_run.artifact_key, { exact: true }).click();
  step = 'artifact page';
  await page.waitForURL(/\/artifacts\/artifact\//);
  await sees(spec.completed_run.artifact_heading);
  for (const cell of spec.completed_run.artifact_cells) {
    step = `artifact page: table cell "${cell}"`;
    await page.getByRole('cell', { name: cell, exact: true }).first().waitFor();
  }
  await snap('ui-artifact.png');

  // --- the failed run: state and the one-line reason
  step = 'failed flow run page';
  await page.goto(`${spec.ui_url}/runs/flow-run/${spec.failed_run.id}`);
  await sees(spec.failed_run.name);
  await sees('Failed');
  await sees(spec.failed_run.message);
  await page.setViewportSize({ width: 1600, height: 1400 });
  await snap('ui-failed-run.png');
  await page.setViewportSize({ width: 1600, height: 1000 });

  // --- the runs list: each run named for its occasion's date
  step = 'runs page';
  await page.goto(`${spec.ui_url}/runs`);
  for (const name of spec.dated_run_names) {
    step = `runs page: the run "${name}"`;
    await sees(name);
  }
  await snap('ui-runs.png');

  // --- the custom-run form: a date picker, a channel list, a switch; submit it
  const form = spec.run_form;
  step = 'deployment page: Run, then Custom run';
  await page.goto(`${spec.ui_url}/deployments/deployment/${form.deployment_id}`);
  await page.getByRole('button', { name: 'Run', exact: true }).click();
  await page.getByText('Custom run', { exact: true }).click();
  step = 'custom run form';
  await page.waitForURL(/\/run(\?|$)/);
  await sees('as_of');
  for (const text of form.descriptions) {
    step = `custom run form: the description "${text}"`;
    await sees(text);
  }
  step = 'custom run form: as_of starts on its "today" switch';
  const asOf = page.locator('.schema-form-property').filter({ hasText: form.as_of_description })
    .last();
  await asOf.getByRole('button', { name: 'today', exact: true }).waitFor();
  if (await asOf.getByRole('button', { name: 'None', exact: true }).count()) {
    throw new Error('as_of offers a "None" switch');
  }
  step = 'custom run form: as_of date picker';
  await page.getByRole('button', { name: 'date', exact: true }).click();
  await page.getByText('Select date', { exact: true }).click();
  await page.locator('input[type="date"]').fill(form.as_of);
  await page.getByRole('button', { name: 'Apply', exact: true }).click();
  // the picked date stays under "date" (a "today" string choice took it as its const)
  step = 'custom run form: the picked date shows under "date", not greyed as a const';
  const switched = (name) => asOf.locator('.p-button-group__button[aria-selected="true"]')
    .filter({ hasText: new RegExp(`^\\s*${name}\\s*$`) });
  await switched('date').waitFor();
  // the UI re-picks the switch for a new value in a microtask: two frames later it is done
  await page.evaluate(() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done))));
  if (await switched('today').count() || await asOf.getByText('is a const').count()) {
    throw new Error('the picked date shows under "today", as a const');
  }

  // a list from the start, its default picked: no str/None switch to find it behind
  step = 'custom run form: channel list';
  const channelField = page.locator('.schema-form-property')
    .filter({ hasText: form.channel_description }).last();
  const channel = channelField.locator('.p-select-button__control').first();
  step = `custom run form: channel shows its default "${form.channel_default}"`;
  await channel.filter({ hasText: form.channel_default }).waitFor();
  step = 'custom run form: channel has no type switch (str/None)';
  for (const type of ['str', 'None', 'null']) {
    if (await channelField.getByRole('button', { name: type, exact: true }).count()) {
      throw new Error(`the channel field offers a "${type}" switch`);
    }
  }
  step = 'custom run form: channel list';
  await channel.press('ArrowDown'); // opens the list (a click toggles it open and shut)
  for (const name of form.channels) {
    step = `custom run form: the channel "${name}" in the list`;
    await page.getByRole('option', { name, exact: true }).waitFor();
  }
  await page.getByRole('option', { name: form.channel, exact: true }).click();
  await channel.filter({ hasText: form.channel }).waitFor();

  step = 'custom run form: dry_run switch';
  const dryRun = page.locator('.schema-form-property').filter({ hasText: 'dry_run' })
    .getByRole('switch').last();
  await dryRun.click();
  await page.locator('.schema-form-property').filter({ hasText: 'dry_run' })
    .locator('[role="switch"][aria-checked="true"]').last().waitFor();
  await snap('ui-run-form.png');

  step = 'custom run form: submit';
  const runName = await page.locator('form input[type="text"]').first().inputValue();
  await page.getByRole('button', { name: 'Submit', exact: true }).click();
  // back on the deployment page, the new run is listed by the name the form gave it
  step = `deployment page: the submitted run "${runName}"`;
  const link = page.getByRole('link', { name: runName, exact: true }).first();
  await link.waitFor();
  const submitted = (await link.getAttribute('href')).match(/flow-run\/([0-9a-f-]{36})/)[1];

  // --- the on-demand deployment's form: the campaign picked from a list, not typed
  const onDemand = spec.campaign_form;
  step = 'campaign-on-demand: Run, then Custom run';
  await page.goto(`${spec.ui_url}/deployments/deployment/${onDemand.deployment_id}`);
  await page.getByRole('button', { name: 'Run', exact: true }).click();
  await page.getByText('Custom run', { exact: true }).click();
  await page.waitForURL(/\/run(\?|$)/);
  step = `campaign-on-demand form: the description "${onDemand.description}"`;
  await sees(onDemand.description);
  step = 'campaign-on-demand form: the campaign list';
  const campaign = page.locator('.schema-form-property').filter({ hasText: onDemand.description })
    .locator('.p-select-button__control').first();
  await campaign.press('ArrowDown');
  for (const name of onDemand.campaigns) {
    step = `campaign-on-demand form: the campaign "${name}" in the list`;
    await page.getByRole('option', { name, exact: true }).waitFor();
  }
  await snap('ui-run-form-campaign.png');

  console.log(JSON.stringify({ submitted_run_id: submitted, outside_requests: outside }));
  await context.close();
} catch (error) {
  await failed(context, page, spec.failure_dir, step, error);
}
