// Logs into the RabbitMQ management UI in headless Chromium, opens a dead-letter queue, gets
// its first message (requeued, so nothing is consumed) and saves a screenshot of what an
// operator sees: the failure headers. Fails if any of them is missing from the page.
//
// Environment: VHOST (required), QUEUE (inventory.dlq), OUT (PNG path, required),
// UI_URL (http://127.0.0.1:15672), UI_USER / UI_PASSWORD (guest), CHROMIUM (/usr/bin/chromium).
import { chromium } from 'playwright-core';

const env = process.env;
const ui = env.UI_URL ?? 'http://127.0.0.1:15672';
const queue = env.QUEUE ?? 'inventory.dlq';
if (!env.VHOST || !env.OUT) {
  console.error('VHOST and OUT are required');
  process.exit(64);
}
const expectedHeaders = [
  'x-failure-reason', 'x-exception-type', 'x-exception-message', 'x-exception-detail',
  'x-failed-service', 'x-failed-at', 'x-original-exchange', 'x-original-routing-key',
  'x-original-queue', 'x-attempt', 'traceparent',
];

const browser = await chromium.launch({
  executablePath: env.CHROMIUM ?? '/usr/bin/chromium',
  // The machine has no network beyond the package registries: keep Chromium from trying.
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  // Tall enough for the queue page and the message at once: no scrolling, no resizing.
  const page = await browser.newPage({ viewport: { width: 1280, height: 2400 } });
  await page.goto(`${ui}/`);
  await page.fill('input[name="username"]', env.UI_USER ?? 'guest');
  await page.fill('input[name="password"]', env.UI_PASSWORD ?? 'guest');
  await page.click('input[type="submit"]');
  await page.waitForSelector('#logout', { timeout: 30000 });
  // The UI re-renders every few seconds, which would drop the fetched message: stop that.
  const refresh = page.locator('select#update-every');
  if (await refresh.count() > 0) {
    await refresh.selectOption('');
  }

  await page.goto(`${ui}/#/queues/${encodeURIComponent(env.VHOST)}/${encodeURIComponent(queue)}`);
  const section = page.locator('div.section-hidden, div.section').filter({ has: page.locator('h2', { hasText: 'Get messages' }) });
  await section.locator('h2').click();
  // The UI re-renders its page now and then, which drops a fetched message: fetch, capture, and
  // check the message was still on screen after the capture; try again if not.
  const message = page.locator('#msg-wrapper');
  let captured = false;
  for (let attempt = 1; attempt <= 5 && !captured; attempt++) {
    await section.locator('input[type="submit"][value="Get Message(s)"]').click();
    await page.waitForSelector('#msg-wrapper >> text=x-failure-reason', { timeout: 30000 });
    // The UI slides the message open (a jQuery animation): wait until it is fully shown.
    await page.waitForFunction(() => {
      const wrapper = document.querySelector('#msg-wrapper');
      const animating = window.jQuery && window.jQuery('#msg-wrapper, #msg-wrapper *').is(':animated');
      return wrapper && wrapper.getBoundingClientRect().height > 100 && !animating;
    }, null, { timeout: 30000 });
    const text = await message.innerText();
    const missing = expectedHeaders.filter((header) => !text.includes(header));
    if (missing.length > 0) {
      console.error(`headers missing from the page: ${missing.join(', ')}`);
      process.exit(1);
    }
    // From the page title (which names the queue) down to the fetched message's last header.
    const title = await page.locator('h1').first().boundingBox();
    const top = await section.locator('h2').boundingBox();
    const bottom = await page.evaluate(() => {
      const boxes = [...document.querySelectorAll('#msg-wrapper *')].map((e) => e.getBoundingClientRect().bottom);
      return Math.max(0, ...boxes) + window.scrollY;
    });
    if (!title || !top || bottom - top.y < 100) continue;
    await page.screenshot({
      path: env.OUT,
      clip: { x: 0, y: title.y - 8, width: 1280, height: bottom - title.y + 24 },
    });
    captured = (await message.innerText()).includes('x-failure-reason');
  }
  if (!captured) {
    console.error('the message never stayed on screen long enough to capture');
    process.exit(1);
  }
  console.log(JSON.stringify({ screenshot: env.OUT, queue, vhost: env.VHOST, headers: expectedHeaders.length }));
} finally {
  await browser.close();
}
