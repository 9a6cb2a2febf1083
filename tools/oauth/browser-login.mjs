// Drives headless Chromium through oidc-provider's dev login + consent pages (tools/oauth/world.mjs).
//
// Usage: node browser-login.mjs AUTHORIZATION_URL USERNAME
//   env CHROMIUM: browser executable (default /usr/bin/chromium); LOGIN_TIMEOUT_MS (default 20000)
// Opens the authorization URL in a fresh profile, signs in as USERNAME (any password), consents,
// and waits until the browser is sent to a 127.0.0.1/localhost URL outside the authorization
// server's origin (the redirect_uri). Prints one JSON line and exits 0:
//   {"final_url": "...", "status": 200 | null, "body_text": "first 500 chars", "error"?: "..."}
// `status` is null (and `error` set) when nothing answered at the redirect_uri, e.g. connection
// refused. Exits non-zero with a message on stderr on any other failure. Only loopback hosts are
// reachable: every other request (e.g. the login page's web font) is aborted.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { chromium } from 'playwright-core';

const [authorizationUrl, username] = process.argv.slice(2);
if (!authorizationUrl || !username) {
  process.stderr.write('usage: node browser-login.mjs AUTHORIZATION_URL USERNAME\n');
  process.exit(2);
}
const EXECUTABLE = process.env.CHROMIUM || '/usr/bin/chromium';
const TIMEOUT_MS = Number(process.env.LOGIN_TIMEOUT_MS || 20000);
const FLAGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);

const asOrigin = new URL(authorizationUrl).origin;
const isLanding = (url) => {
  const parsed = URL.parse(url);
  return parsed !== null && parsed.origin !== asOrigin && LOOPBACK.has(parsed.hostname)
    && (parsed.protocol === 'http:' || parsed.protocol === 'https:');
};

const profile = mkdtempSync(join(tmpdir(), 'warden-chromium-'));
let context;

async function run() {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: EXECUTABLE,
    headless: true,
    args: FLAGS,
    timeout: TIMEOUT_MS,
  });
  await context.route('**/*', (route) => {
    const { hostname } = new URL(route.request().url());
    return LOOPBACK.has(hostname) ? route.continue() : route.abort();
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(TIMEOUT_MS);

  // Resolved once the main frame's navigation to the redirect_uri got an answer or failed.
  let landing;
  const landed = new Promise((resolve) => {
    page.on('request', (request) => {
      if (!landing && request.isNavigationRequest() && request.frame() === page.mainFrame()
          && isLanding(request.url())) {
        landing = { request, url: request.url() };
      }
    });
    page.on('response', (response) => {
      if (landing && response.request() === landing.request) resolve({ response });
    });
    page.on('requestfailed', (request) => {
      if (landing && request === landing.request) resolve({ error: request.failure()?.errorText ?? 'failed' });
    });
  });

  const deadline = Date.now() + TIMEOUT_MS;
  await page.goto(authorizationUrl, { waitUntil: 'domcontentloaded' }).catch((err) => {
    if (!landing) throw err;
  });
  for (let step = 0; !landing; step += 1) {
    if (step > 6 || Date.now() > deadline) throw new Error(`no redirect_uri reached; at ${page.url()}`);
    const prompt = await page.locator('input[name="prompt"]').getAttribute('value', { timeout: 5000 })
      .catch(() => null);
    if (prompt === null) {
      if (landing) break;
      const text = await page.locator('body').innerText({ timeout: 2000 }).catch(() => '');
      throw new Error(`unexpected page ${page.url()}: ${text.slice(0, 300)}`);
    }
    if (prompt === 'login') {
      await page.fill('input[name="login"]', username);
      await page.fill('input[name="password"]', 'password');
    } else if (prompt !== 'consent') {
      throw new Error(`unexpected prompt ${prompt} at ${page.url()}`);
    }
    const before = page.url();
    await Promise.all([
      page.waitForURL((url) => url.href !== before, { waitUntil: 'domcontentloaded' }).catch(() => {}),
      page.click('button[type="submit"]'),
    ]);
  }

  const outcome = await Promise.race([
    landed,
    new Promise((resolve) => setTimeout(() => resolve({ error: 'timed out waiting for the redirect_uri' }), Math.max(1000, deadline - Date.now()))),
  ]);
  const result = { final_url: landing.url, status: null, body_text: '' };
  if (outcome.response) {
    result.status = outcome.response.status();
    await page.waitForLoadState('domcontentloaded', { timeout: 5000 }).catch(() => {});
    result.body_text = (await page.locator('body').innerText({ timeout: 5000 }).catch(() => '')).slice(0, 500);
  } else {
    result.error = outcome.error;
  }
  return result;
}

let code = 0;
try {
  const result = await run();
  process.stdout.write(`${JSON.stringify(result)}\n`);
} catch (err) {
  process.stderr.write(`browser-login: ${err?.message ?? err}\n`);
  code = 1;
} finally {
  await context?.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
process.exit(code);
