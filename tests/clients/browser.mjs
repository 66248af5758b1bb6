// GraphiQL in a real browser (Debian's chromium, driven by playwright-core), offline: the page,
// its scripts and the schema all come from the gateway. Checks that the docs explorer lists
// Query.sessions, that autocompletion offers fields, that the default query runs and shows data
// without errors, that the SQL panel lists the statements it ran, that a subscription streams
// into the answer pane, and that no request leaves the gateway. With a token (authentication
// on), the token field must be offered and must authenticate the requests.
// Usage: node browser.mjs http://127.0.0.1:8000/graphql [token]
import { chromium } from 'playwright-core';

const url = process.argv[2];
const token = process.argv[3];
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

  const tokenField = page.locator('#token');
  if (token) {
    // Authentication is on: the page offers a token field, kept in local storage.
    if (!(await tokenField.isVisible())) fail('no token field although authentication is on');
    await tokenField.fill(token);
    await tokenField.press('Enter');
    await tokenField.dispatchEvent('change');
    const kept = await page.evaluate(() => localStorage.getItem('bughive:token'));
    if (kept !== token) fail('the token was not kept in local storage');
    await page.reload({ waitUntil: 'networkidle' });
    if ((await tokenField.inputValue()) !== token) fail('the token field forgot the token');
  } else if (await tokenField.isVisible()) {
    fail('a token field although authentication is off');
  }

  const editor = async (text) => {
    await page.evaluate((t) => {
      const cm = document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror;
      cm.setValue(t);
    }, text);
    // GraphiQL parses the editor's text after a short debounce; the run button uses that.
    await page.waitForTimeout(700);
  };
  const response = () => page.evaluate(
    () => document.querySelector('.graphiql-response')?.textContent || '',
  );

  // The docs explorer: open it, then the Query type, which must list `sessions`.
  await page.getByRole('button', { name: /documentation explorer/i }).click();
  const docs = page.locator('.graphiql-doc-explorer');
  await docs.waitFor({ timeout: 15000 });
  await docs.getByRole('link', { name: 'Query', exact: true }).first().click();
  await docs.getByText('sessions', { exact: true }).first().waitFor({ timeout: 10000 });

  // The default query, as the page opens with it, runs and shows data, and no error.
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

  // Autocompletion offers the root fields while typing.
  await editor('{\n  \n}');
  await page.evaluate(() => {
    const cm = document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror;
    cm.focus();
    cm.setCursor({ line: 1, ch: 2 });
  });
  await page.keyboard.type('sess', { delay: 50 });
  await page.locator('.CodeMirror-hints li', { hasText: 'sessions' }).first()
    .waitFor({ timeout: 10000 })
    .catch(() => fail('autocompletion did not offer sessions'));
  await page.keyboard.press('Escape');

  // A nested query, for the SQL panel.
  await editor(`{
  sessions(first: 5) {
    nodes { id pages(first: 3) { nodes { url bugs(first: 2) { nodes { title } } } } }
  }
}`);
  await page.locator('.graphiql-execute-button').click();
  await page.waitForFunction(
    () => (document.querySelector('.graphiql-response')?.textContent || '').includes('"pages"'),
    null,
    { timeout: 15000 },
  );

  // The SQL panel lists what the query ran.
  await page.getByRole('button', { name: 'Show SQL' }).click();
  await page.waitForFunction(
    () => document.querySelectorAll('.bughive-sql li').length >= 3,
    null,
    { timeout: 10000 },
  ).catch(async () => fail(`the SQL panel does not list the query's 3 statements: ${
    await page.locator('.graphiql-plugin').textContent().catch(() => '')}`));
  const first = await page.locator('.bughive-sql li').first().textContent();
  if (!/ms\s+SELECT/.test(first)) fail(`the SQL panel shows no statement: ${first}`);

  // A subscription streams into the answer pane.
  const sessionId = ((await response()).match(/"id":\s*"([0-9a-f-]{36})"/) || [])[1];
  if (!sessionId) fail(`no session id in the answer: ${text.slice(0, 300)}`);
  await editor(`subscription { sessionProgress(sessionId: "${sessionId}") { kind session { id } } }`);
  await page.locator('.graphiql-execute-button').click();
  await page.waitForFunction(
    () => (document.querySelector('.graphiql-response')?.textContent || '').includes('snapshot'),
    null,
    { timeout: 15000 },
  ).catch(async () => fail(`the subscription showed no snapshot: ${(await response()).slice(0, 300)}`));
  await page.locator('.graphiql-execute-button').click();

  if (token) {
    // The Headers pane sends Authorization: forget the token field's token, set the header.
    await page.locator('#forget').click();
    await page.getByRole('button', { name: 'Headers' }).click();
    await page.waitForTimeout(300);
    const set = await page.evaluate((t) => {
      // The Variables and Headers editors share the pane; the inactive one is `.hidden`.
      const editor = document.querySelector('.graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror');
      if (!editor) return false;
      editor.CodeMirror.setValue(JSON.stringify({ Authorization: `Bearer ${t}` }));
      return true;
    }, token);
    if (!set) fail('no Headers pane');
    await editor('{ me { subject role } }');
    await page.locator('.graphiql-execute-button').click();
    await page.waitForFunction(
      () => /"subject"/.test(document.querySelector('.graphiql-response')?.textContent || ''),
      null,
      { timeout: 15000 },
    ).catch(async () => fail(`the Headers pane's Authorization was not sent: ${(await response()).slice(0, 300)}`));
  }

  if (outside.length) fail(`requests left the gateway: ${outside.join(', ')}`);
  if (pageErrors.length) fail(`the page threw: ${pageErrors.join('; ')}`);
  console.log('browser: docs list Query.sessions; autocompletion, the query, the SQL panel and a subscription work; nothing left the gateway');
} finally {
  await browser.close();
}
