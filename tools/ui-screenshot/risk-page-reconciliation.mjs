// The risk page's reconciliation section in headless Chromium, driven together with a Rust test
// (services/risk/tests/api/reconciliation.rs) that owns reconcile's clock and publishes the
// payment sides. The script prints `step: <name>` when the page shows what the test waits for,
// and the test then changes the world for the next step:
//   watching    the matched order is counted, nothing open or resolved (the empty states)
//   open        the unanswered order (third-party-missing) and the wrong amount are open
//   resolved    the late callback moved the first to resolved, with its history; screenshot
//   unreachable reconcile stopped: the section says so and keeps what it showed
// Never reloads the page (checked at the end). Exits non-zero with the reason if a step fails.
//
// Environment: PAGE_URL, TOKEN, OUT (PNG path), MISSING_ORDER, MATCHED_ORDER, WRONG_ORDER
// (required), CHROMIUM (/usr/bin/chromium).
import { chromium } from 'playwright-core';

const env = process.env;
for (const name of ['PAGE_URL', 'TOKEN', 'OUT', 'MISSING_ORDER', 'MATCHED_ORDER', 'WRONG_ORDER']) {
  if (!env[name]) {
    console.error(`${name} is required`);
    process.exit(64);
  }
}
const base = env.PAGE_URL.endsWith('/') ? env.PAGE_URL : `${env.PAGE_URL}/`;
const timeout = 30000;

function fail(message) {
  throw new Error(message);
}

function step(name) {
  console.log(`step: ${name}`);
}

const browser = await chromium.launch({
  executablePath: env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const problems = [];
const page = await browser.newPage({ viewport: { width: 1360, height: 900 }, locale: 'en-US' });
try {
  // The 503s once reconcile is stopped are logged as failed loads: expected, nothing else is.
  page.on('console', (message) => {
    if (message.type() === 'error' && !/^Failed to load resource/.test(message.text())) {
      problems.push(`console: ${message.text()}`);
    }
  });
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));

  await page.goto(`${base}#token=${encodeURIComponent(env.TOKEN)}`);
  await page.evaluate(() => { window.loadedOnce = true; });
  const section = page.locator('#recon-section');
  const open = (order) => page.locator(`#recon-open-table tbody tr[data-order-id="${order}"]`);
  const resolved = (order) =>
    page.locator(`#recon-resolved-table tbody tr[data-order-id="${order}"]`);
  const tile = (id) => page.locator(`#${id} .value`);
  const waitText = async (locator, text, what) => {
    try {
      await page.waitForFunction(([element, text]) => element?.textContent === text,
        [await locator.elementHandle({ timeout }), text], { timeout });
    } catch (_) {
      fail(`${what}: expected ${JSON.stringify(text)}, shows ${JSON.stringify(await locator.textContent())}`);
    }
  };

  // watching: one order decided (matched), the other still in its window.
  await page.waitForSelector('#recon-section[data-state="live"]', { timeout });
  await waitText(tile('recon-total'), '1', 'orders decided');
  await waitText(page.locator('#recon-outcomes [data-outcome="matched"] b'), '1', 'matched count');
  await waitText(tile('recon-rate'), '100.0 %', 'match rate');
  if (!/ s$/.test(await tile('recon-p50').textContent())) fail('no time to match p50');
  if (!await page.locator('#recon-open-empty').isVisible()) fail('no empty state for open');
  if (!await page.locator('#recon-resolved-empty').isVisible()) fail('no empty state for resolved');
  const refreshes = Number(await section.getAttribute('data-refreshes'));
  step('watching');

  // open: both mismatches arrive with a refresh.
  await open(env.MISSING_ORDER).waitFor({ timeout });
  await open(env.WRONG_ORDER).waitFor({ timeout });
  if (Number(await section.getAttribute('data-refreshes')) <= refreshes) fail('no refresh happened');
  const missingRow = await open(env.MISSING_ORDER).innerText();
  if (!/third-party-missing/.test(missingRow) || !/succeeded 120\.00/.test(missingRow) ||
    !/none/.test(missingRow)) {
    fail(`the unanswered order's row: ${missingRow}`);
  }
  const wrongRow = await open(env.WRONG_ORDER).innerText();
  if (!/amount-mismatch/.test(wrongRow) || !/succeeded 50\.00/.test(wrongRow) ||
    !/success 45\.00/.test(wrongRow)) {
    fail(`the wrong amount's row: ${wrongRow}`);
  }
  if (await open(env.WRONG_ORDER).locator('td.amount.differs').count() !== 2) {
    fail('the differing amounts are not marked');
  }
  await waitText(tile('recon-open'), '2', 'open mismatches');
  if (await page.locator('#recon-open-empty').isVisible()) fail('the empty state stayed');
  step('open');

  // resolved: the late callback moves the first one over, with its history.
  await resolved(env.MISSING_ORDER).waitFor({ timeout });
  await open(env.MISSING_ORDER).waitFor({ state: 'detached', timeout });
  const history = await resolved(env.MISSING_ORDER).locator('td.history').innerText();
  if (history !== 'third-party-missing → late-match') fail(`the history shows: ${history}`);
  await waitText(tile('recon-open'), '1', 'open mismatches after the late match');
  await waitText(tile('recon-resolved'), '1', 'resolved');
  await waitText(tile('recon-rate'), '66.7 %', 'match rate after the late match');
  if (!await open(env.WRONG_ORDER).isVisible()) fail('the wrong amount is no longer open');
  if (await page.locator('#recon-resolved-empty').isVisible()) fail('the empty state stayed');
  await section.screenshot({ path: env.OUT });
  step('resolved');

  // unreachable: said so, and what was shown stays (dimmed).
  await page.waitForSelector('#recon-status[data-state="unreachable"]', { timeout });
  const status = await page.locator('#recon-status').innerText();
  if (!/Reconcile unreachable \((502|503)/.test(status)) fail(`the status shows: ${status}`);
  if (!await resolved(env.MISSING_ORDER).isVisible()) fail('the last rows were dropped');
  await section.screenshot({ path: env.OUT.replace(/\.png$/, '') + '.unreachable.png' });
  if (!await page.evaluate(() => window.loadedOnce === true)) fail('the page was reloaded');
  if (problems.length > 0) fail(problems.join('\n'));
  step('unreachable');
} catch (error) {
  console.error(error.message);
  await page.screenshot({ path: env.OUT.replace(/\.png$/, '') + '.failed.png', fullPage: true })
    .catch(() => {});
  if (problems.length > 0) console.error(problems.join('\n'));
  process.exitCode = 1;
} finally {
  await browser.close();
}
