// GraphiQL in a real browser (Debian's chromium, driven by playwright-core), offline: the page,
// its scripts and the schema all come from the gateway. Checks that the docs explorer lists
// Query.sessions, that the default query runs and shows data without errors, and that no
// request leaves the gateway.
// Usage: node browser.mjs http://127.0.0.1:8000/graphql
import { chromium } from 'playwright-core';

const url = process.argv[2];
const origin = new URL(url).origin;
const fail = (msg) => {
  console.error(`browser: ${msg}`);
  process.exit(1);
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu'],
});
try {
  const page = await browser.newPage();
  const outside = [];
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  await page.route('**/*', (route) => {
    const u = route.request().url();
    if (u.startsWith(origin) || u.startsWith('data:') || u.startsWith('blob:')) {
      return route.continue();
    }
    outside.push(u);
    return route.abort();
  });
  await page.goto(url, { waitUntil: 'networkidle', timeout: 30000 });

  // The docs explorer: open it, then the Query type, which must list `sessions`.
  await page.getByRole('button', { name: /documentation explorer/i }).click();
  const docs = page.locator('.graphiql-doc-explorer');
  await docs.waitFor({ timeout: 15000 });
  await docs.getByRole('link', { name: 'Query', exact: true }).first().click();
  await docs.getByText('sessions', { exact: true }).first().waitFor({ timeout: 10000 });

  // The default query runs and shows data, and no error.
  await page.locator('.graphiql-execute-button').click();
  const result = page.locator('.graphiql-response');
  await page.waitForFunction(
    () => (document.querySelector('.graphiql-response')?.textContent || '').includes('totalCount'),
    null,
    { timeout: 15000 },
  );
  const text = await result.textContent();
  if (!text.includes('"data"')) fail(`the default query showed no data: ${text.slice(0, 300)}`);
  if (text.includes('"errors"')) fail(`the default query showed errors: ${text.slice(0, 300)}`);

  if (outside.length) fail(`requests left the gateway: ${outside.join(', ')}`);
  if (pageErrors.length) fail(`the page threw: ${pageErrors.join('; ')}`);
  console.log('browser: docs list Query.sessions; the default query shows data; nothing left the gateway');
} finally {
  await browser.close();
}
