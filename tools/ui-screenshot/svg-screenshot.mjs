// Renders an SVG file in headless Chromium and saves it as a PNG: the check a person would do
// on a generated picture (the chaos timeline). Fails if Chromium cannot parse the SVG.
//
// Usage: node svg-screenshot.mjs IN.svg OUT.png
// Environment: CHROMIUM (/usr/bin/chromium).
import { chromium } from 'playwright-core';
import { pathToFileURL } from 'node:url';

const [input, output] = process.argv.slice(2);
if (!input || !output) {
  console.error('usage: node svg-screenshot.mjs IN.svg OUT.png');
  process.exit(64);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  // The machine has no network beyond the package registries: keep Chromium from trying.
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  // Twice the pixels, so text stays sharp when the PNG is shown in docs.
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 }, deviceScaleFactor: 2 });
  await page.goto(pathToFileURL(input).href);
  // Chromium shows an XML error page instead of the picture when the SVG is malformed.
  const error = await page.evaluate(() => document.getElementsByTagName('parsererror')[0]?.textContent ?? null);
  if (error !== null) {
    console.error(`the SVG does not parse: ${error}`);
    process.exit(1);
  }
  const svg = page.locator('svg').first();
  const box = await svg.boundingBox();
  if (!box || box.width < 10 || box.height < 10) {
    console.error('the SVG has no visible size');
    process.exit(1);
  }
  await svg.screenshot({ path: output });
  console.log(JSON.stringify({ screenshot: output, width: box.width, height: box.height }));
} finally {
  await browser.close();
}
