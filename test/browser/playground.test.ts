/**
 * The playground in a real browser: Debian's Chromium driven by playwright-core (no browser
 * download), against a live kiapi (real HTTP on 127.0.0.1, the preview engine with slow steps so
 * progress, queueing and cancel can be seen). One page goes through what a person does, in order:
 * enter the token, generate, see a server error beside its field, img2img, edit with two images,
 * build an Ideogram caption by drawing two boxes until strict validation passes and generate,
 * watch a queued and a running job and cancel them, page through the gallery, reuse settings,
 * delete; then an axe-core accessibility check of every tab and a phone-width layout check.
 * Throughout: no request leaves 127.0.0.1 and the page logs no console error.
 *
 * Screenshots of each screen go to KIAPI_SCREENSHOT_DIR (default dist/screenshots); with
 * KIAPI_UPDATE_SCREENSHOTS=1 the two the README shows are also written to docs/screenshots/.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { PACKAGE_ROOT } from '../../src/core/package-info.js';
import { startServer, tempDir, type TestServer } from '../support/server.js';

const require = createRequire(import.meta.url);
const TOKEN = 'playground-browser-token';
const CHROMIUM = process.env.KIAPI_CHROMIUM ?? '/usr/bin/chromium';
const SHOTS = process.env.KIAPI_SCREENSHOT_DIR ?? path.join(PACKAGE_ROOT, 'dist', 'screenshots');
const README_SHOTS = path.join(PACKAGE_ROOT, 'docs', 'screenshots');
/** Generous: a loaded 2-core machine. Every wait is for a condition, never a fixed time. */
const WAIT = 60_000;

let srv: TestServer;
let profileDir: string;
let context: BrowserContext;
let page: Page;
const consoleErrors: string[] = [];
const foreignRequests: string[] = [];
/** Error answers a step provokes on purpose; Chromium logs each as a console error. */
const expectedHttpErrors: number[] = [];

/**
 * The whole page as `name`.png; with `readme` (a selector) also one screen's worth scrolled to that
 * part, which is what the README shows.
 */
async function shot(name: string, readme?: string): Promise<void> {
  fs.mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
  if (readme) {
    await page.locator(readme).evaluate((el) => (el as unknown as { scrollIntoView(o: object): void }).scrollIntoView({ block: 'start' }));
    const file = path.join(SHOTS, `${name}-screen.png`);
    await page.screenshot({ path: file });
    if (process.env.KIAPI_UPDATE_SCREENSHOTS === '1') {
      fs.mkdirSync(README_SHOTS, { recursive: true });
      fs.copyFileSync(file, path.join(README_SHOTS, `playground-${name}.png`));
    }
  }
}

async function png(r: number, g: number, b: number, size = 96): Promise<Buffer> {
  return sharp({ create: { width: size, height: size, channels: 3, background: { r, g, b } } }).png().toBuffer();
}

async function api<T>(method: string, p: string, body?: unknown): Promise<T> {
  const res = await fetch(`${srv.url}${p}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, accept: 'application/json', ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  assert.ok(res.ok, `${method} ${p}: ${res.status} ${text}`);
  return JSON.parse(text) as T;
}

async function tab(name: string): Promise<void> {
  await page.getByRole('tab', { name }).click();
  await page.locator(`[role=tabpanel][aria-labelledby=tab-${name.toLowerCase()}]`).waitFor({ state: 'visible' });
}

/**
 * The page is a browser document; these tests are compiled without the DOM library, so what the
 * functions run in the page use is typed here, as little as they need.
 */
interface PageImage { complete: boolean; naturalWidth: number; naturalHeight: number; getAttribute(name: string): string | null }
interface PageDocument {
  querySelector(selector: string): PageImage | null;
  querySelectorAll(selector: string): ArrayLike<PageImage>;
  documentElement: { scrollWidth: number };
}
interface PageWindow { document: PageDocument; innerWidth: number; localStorage: { getItem(key: string): string | null } }

/** Clicks `button` and waits for the job it submits to reach `state` (a new job id in the panel). */
async function submitAndWait(button: ReturnType<Page['getByRole']>, state: string): Promise<string> {
  const before = (await page.locator('.job-panel').getAttribute('data-job-id')) ?? '';
  await button.click();
  // A new job in the panel, or the form's error line (then the test fails with the server's words).
  await page.waitForFunction((old) => {
    const doc = (globalThis as unknown as PageWindow).document;
    const id = doc.querySelector('.job-panel')?.getAttribute('data-job-id');
    const error = doc.querySelector('[role=tabpanel]:not([hidden]) .form-error:not([hidden])');
    return error !== null || (id !== undefined && id !== null && id !== old);
  }, before, { timeout: WAIT });
  const error = page.locator('[role=tabpanel]:not([hidden]) .form-error:not([hidden])');
  if ((await error.count()) > 0) assert.fail(`the form answered: ${await error.first().textContent()}`);
  await jobState(state);
  return (await page.locator('.job-panel').getAttribute('data-job-id'))!;
}

async function jobState(state: string): Promise<void> {
  await page.locator(`.job-panel[data-state=${state}]`).waitFor({ timeout: WAIT });
}

async function resultSize(): Promise<{ w: number; h: number }> {
  const img = page.locator('.job-panel img.result-image');
  await img.waitFor({ timeout: WAIT });
  await page.waitForFunction(() => {
    const el = (globalThis as unknown as PageWindow).document.querySelector('.job-panel img.result-image');
    return el !== null && el.complete && el.naturalWidth > 0;
  }, undefined, { timeout: WAIT });
  return img.evaluate((el) => ({ w: (el as unknown as PageImage).naturalWidth, h: (el as unknown as PageImage).naturalHeight }));
}

const generatePanel = () => page.locator('#panel-generate');

before(async () => {
  srv = await startServer({ KIAPI_AUTH_TOKEN: TOKEN, KIAPI_PREVIEW_STEP_MS: '80', KIAPI_QWEN_MAX_STEPS: '1000' });
  profileDir = tempDir('kiapi-chromium-');
  context = await chromium.launchPersistentContext(profileDir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1360, height: 900 },
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  // Every request the page makes must go to the kiapi server; anything else is recorded and refused.
  await context.route('**/*', async (route) => {
    const url = new URL(route.request().url());
    if (url.hostname === '127.0.0.1' && url.port === String(srv.port)) return route.continue();
    foreignRequests.push(route.request().url());
    return route.abort();
  });
  context.setDefaultTimeout(WAIT);
  page = context.pages()[0] ?? (await context.newPage());
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const status = /status of (\d{3})/.exec(m.text());
    const i = status ? expectedHttpErrors.indexOf(Number(status[1])) : -1;
    if (i >= 0) expectedHttpErrors.splice(i, 1);
    else consoleErrors.push(m.text());
  });
  page.on('pageerror', (err) => consoleErrors.push(`uncaught: ${err.message}`));
  page.on('dialog', (d) => void d.accept());
});

after(async () => {
  await context?.close();
  await srv?.close();
  if (profileDir) fs.rmSync(profileDir, { recursive: true, force: true });
});

void describe('playground in Chromium', () => {
  void it('asks for the token, keeps it in the browser, and then works', async () => {
    await page.goto(`${srv.url}/`);
    const token = page.getByLabel('Access token (KIAPI_AUTH_TOKEN)');
    await token.waitFor({ state: 'visible' });
    await shot('token');
    // A wrong token is refused in words, where it was entered.
    await token.fill('not-the-token');
    expectedHttpErrors.push(401);
    await page.getByRole('button', { name: 'Save' }).click();
    await page.locator('#token-hint', { hasText: 'The server refused the access token' }).waitFor();
    await token.fill(TOKEN);
    await page.getByRole('button', { name: 'Save' }).click();
    await page.locator('nav [role=status]', { hasText: 'Token accepted.' }).waitFor();
    assert.equal(await page.evaluate(() => (globalThis as unknown as PageWindow).localStorage.getItem('kiapi.token')), TOKEN);
    // A reload finds it again: no prompt.
    await page.reload();
    await page.getByRole('tab', { name: 'Generate' }).waitFor();
    assert.equal(await page.locator('.token-form').isHidden(), true);
  });

  void it('generates an image and shows it as it forms', async () => {
    await tab('Generate');
    await generatePanel().getByLabel('Prompt', { exact: true }).fill('a lighthouse at dusk, oil painting');
    await generatePanel().getByLabel('Size').selectOption('512x512');
    await generatePanel().getByLabel('Steps').fill('12');
    await submitAndWait(generatePanel().getByRole('button', { name: 'Generate' }), 'succeeded');
    assert.deepEqual(await resultSize(), { w: 512, h: 512 });
    await page.locator('.job-details', { hasText: 'Seed' }).waitFor();
    await shot('generate', 'header.top');
  });

  void it('shows a server error beside the field that caused it', async () => {
    await generatePanel().getByLabel('Size').selectOption('custom');
    await generatePanel().getByLabel('Width (px)').fill('500');
    await generatePanel().getByLabel('Height (px)').fill('512');
    expectedHttpErrors.push(422);
    await generatePanel().getByRole('button', { name: 'Generate' }).click();
    const err = generatePanel().locator('.field:has(label:text("Width (px)")) .field-error');
    await err.waitFor({ state: 'visible' });
    assert.match((await err.textContent()) ?? '', /16/);
    assert.equal(await generatePanel().getByLabel('Width (px)').getAttribute('aria-invalid'), 'true');
    await shot('generate-error');
    await generatePanel().getByLabel('Size').selectOption('512x512');
  });

  void it('img2img: an image dropped in, image strength explained, result made from it', async () => {
    // Dropped, as from a file manager: a drop event carrying the file.
    const bytes = [...(await png(200, 30, 30))];
    const dataTransfer = await page.evaluateHandle((b) => {
      const g = globalThis as unknown as {
        DataTransfer: new () => { items: { add(f: unknown): void } };
        File: new (parts: unknown[], name: string, opts: object) => unknown;
      };
      const dt = new g.DataTransfer();
      dt.items.add(new g.File([new Uint8Array(b)], 'red.png', { type: 'image/png' }));
      return dt;
    }, bytes);
    await generatePanel().locator('.drop-zone').first().dispatchEvent('drop', { dataTransfer });
    await generatePanel().locator('.picked img').waitFor({ timeout: WAIT });
    await generatePanel().getByText('Higher keeps more of your image').waitFor();
    await generatePanel().getByLabel(/Image strength/).fill('0.7');
    await submitAndWait(generatePanel().getByRole('button', { name: 'Generate' }), 'succeeded');
    assert.match((await page.locator('.job-status').textContent()) ?? '', /img2img/);
    assert.equal(await page.locator('.job-inputs img').count(), 1);
    await resultSize();
    await generatePanel().getByRole('button', { name: 'Remove image 1' }).click();
  });

  void it('applies an uploaded LoRA', async () => {
    // A minimal valid safetensors file: 8-byte header length, JSON header, the tensor's bytes.
    const header = Buffer.from(
      JSON.stringify({
        'blocks.0.attn.to_q.lora_A.weight': { dtype: 'F32', shape: [2, 4], data_offsets: [0, 32] },
        'blocks.0.attn.to_q.lora_B.weight': { dtype: 'F32', shape: [4, 2], data_offsets: [32, 64] },
      }),
    );
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(header.length));
    const lora = Buffer.concat([length, header, Buffer.alloc(64)]);
    await generatePanel().getByText('LoRA adapters').click();
    await generatePanel().locator('#lora-upload').setInputFiles({ name: 'ink-style.safetensors', mimeType: 'application/octet-stream', buffer: lora });
    const check = generatePanel().getByRole('checkbox', { name: 'ink-style.safetensors' });
    await check.waitFor({ timeout: WAIT });
    assert.equal(await check.isChecked(), true);
    const jobId = await submitAndWait(generatePanel().getByRole('button', { name: 'Generate' }), 'succeeded');
    const job = await api<{ params: { loras: Array<{ file: { file_id: string }; scale: number }> } }>('GET', `/v1/jobs/${jobId}`);
    assert.equal(job.params.loras.length, 1);
    assert.equal(job.params.loras[0]!.scale, 1);
    await check.uncheck();
  });

  void it('edits two images, the result beside its inputs', async () => {
    await tab('Edit');
    const edit = page.locator('#panel-edit');
    // One image from disk, one from earlier results.
    await edit.locator('input[type=file]').setInputFiles([{ name: 'green.png', mimeType: 'image/png', buffer: await png(30, 180, 60) }]);
    await edit.locator('.picked li').first().waitFor({ timeout: WAIT });
    await edit.getByRole('button', { name: 'From earlier results…' }).click();
    const earlier = edit.locator('.results-picker button.pick');
    await earlier.first().waitFor({ timeout: WAIT });
    const picked = await earlier.nth(1).getAttribute('data-file-id');
    await earlier.nth(1).click();
    await edit.locator('.picked li').nth(1).waitFor({ timeout: WAIT });
    await edit.getByLabel('Instruction').fill('put both squares side by side on a beach');
    await edit.getByLabel('Size').selectOption('512x512');
    await edit.getByLabel('Steps').fill('10');
    await submitAndWait(edit.getByRole('button', { name: 'Edit', exact: true }), 'succeeded');
    assert.equal(await page.locator('.job-inputs img').count(), 2);
    await resultSize();
    const job = await api<{ params: { images: Array<{ file_id: string }> } }>('GET', `/v1/jobs/${await page.locator('.job-panel').getAttribute('data-job-id')}`);
    assert.equal(job.params.images.length, 2);
    assert.equal(job.params.images[1]!.file_id, picked);
    await shot('edit');
  });

  void it('builds an Ideogram caption by drawing two boxes, passes strict validation, generates', async () => {
    await tab('Ideogram');
    const ide = page.locator('#panel-ideogram');
    await ide.getByLabel('Start from').selectOption('blank');
    await ide.getByLabel('Size').selectOption('512x512');
    await ide.getByLabel('High-level description').fill('A poster with the word KIAPI above a red circle.');
    await ide.getByLabel('Aesthetics').fill('bold, minimal');
    await ide.getByLabel('Lighting').fill('flat studio light');
    await ide.getByLabel('Photo / art style').fill('flat lay');
    await ide.getByLabel('Medium').fill('photograph');
    await ide.getByLabel('Background', { exact: true }).fill('Plain white paper.');
    const canvas = ide.locator('.bbox-canvas');
    // Mouse positions are in the viewport: the whole canvas must be on screen.
    await canvas.evaluate((el) => (el as unknown as { scrollIntoView(o: object): void }).scrollIntoView({ block: 'center' }));
    const box = await canvas.boundingBox();
    assert.ok(box);
    const draw = async (x0: number, y0: number, x1: number, y1: number) => {
      await page.mouse.move(box.x + box.width * x0, box.y + box.height * y0);
      await page.mouse.down();
      await page.mouse.move(box.x + box.width * ((x0 + x1) / 2), box.y + box.height * ((y0 + y1) / 2), { steps: 3 });
      await page.mouse.move(box.x + box.width * x1, box.y + box.height * y1, { steps: 3 });
      await page.mouse.up();
    };
    await draw(0.1, 0.1, 0.9, 0.3);
    await draw(0.3, 0.45, 0.7, 0.9);
    assert.equal(await ide.locator('.elements > li').count(), 2);
    await ide.getByLabel('Element 1 type').selectOption('text');
    await ide.getByLabel('Element 1 text').fill('KIAPI');
    await ide.getByLabel('Element 1 description').fill('Bold black letters.');
    await ide.getByLabel('Element 2 type').selectOption('obj');
    await ide.getByLabel('Element 2 description').fill('A flat red circle.');
    // Boxes are shown left/top/right/bottom and stored [y_min, x_min, y_max, x_max].
    const left = Number(await ide.getByLabel('Element 1 box left (0 to 1000)').inputValue());
    const top = Number(await ide.getByLabel('Element 1 box top (0 to 1000)').inputValue());
    assert.ok(Math.abs(left - 100) <= 15 && Math.abs(top - 100) <= 15, `left ${left}, top ${top}`);
    const caption = JSON.parse((await ide.locator('.caption-json').textContent()) ?? '{}') as {
      compositional_deconstruction: { elements: Array<{ bbox: number[] }> };
    };
    const [y0, x0, y1, x1] = caption.compositional_deconstruction.elements[0]!.bbox as [number, number, number, number];
    assert.ok(Math.abs(y0 - top) === 0 && Math.abs(x0 - left) === 0 && y1 > y0 && x1 > x0);
    await ide.locator('.verdict[data-valid=true]').waitFor({ timeout: WAIT });
    // A box upside down: the server's verifier says so as it is typed, beside the element too.
    await ide.getByLabel('Element 1 box top (0 to 1000)').fill('990');
    await ide.locator('.problems li', { hasText: 'elements[0].bbox: y_min (990) should be <= y_max' }).waitFor({ timeout: WAIT });
    await ide.locator('.verdict[data-valid=false]').waitFor();
    await ide.locator('.elements > li').first().locator('.element-problems', { hasText: 'y_min (990)' }).waitFor();
    await shot('ideogram-problem');
    await ide.getByLabel('Element 1 box top (0 to 1000)').fill(String(top));
    await ide.locator('.verdict[data-valid=true]').waitFor({ timeout: WAIT });
    await ide.getByLabel('Quality preset').selectOption('V4_TURBO_12');
    await submitAndWait(ide.getByRole('button', { name: 'Generate with Ideogram 4' }), 'succeeded');
    assert.deepEqual(await resultSize(), { w: 512, h: 512 });
    await shot('ideogram', '#panel-ideogram fieldset.boxes');
  });

  void it('shows queue position, progress, a live preview and cancels', async () => {
    // Something else holds the engine: the page's job waits in the queue.
    const blocker = await api<{ job_id: string }>('POST', '/v1/image/qwen/generate', { prompt: 'blocker', mode: 'async', width: 256, height: 256, steps: 1000 });
    // A job submitted elsewhere (an agent, through the API) is followed by a page that opens meanwhile.
    await page.reload();
    await page.locator(`.job-panel[data-job-id="${blocker.job_id}"][data-state=running]`).waitFor();
    await tab('Generate');
    await generatePanel().getByLabel('Prompt', { exact: true }).fill('a slow storm');
    await generatePanel().getByLabel('Steps').fill('1000');
    await submitAndWait(generatePanel().getByRole('button', { name: 'Generate' }), 'queued');
    await page.locator('.job-details', { hasText: 'Position 1 in the queue' }).waitFor({ timeout: WAIT });
    await shot('queued');
    await page.getByRole('button', { name: 'Cancel' }).click();
    await jobState('canceled');
    await page.getByText('The job was canceled.').waitFor();
    await api('POST', `/v1/jobs/${blocker.job_id}/cancel`, {});
    // Now a running one: progress with step counts and a preview, then cancel.
    await submitAndWait(generatePanel().getByRole('button', { name: 'Generate' }), 'running');
    // The ETA comes from the step times measured on the earlier jobs of this size.
    await page.locator('.job-details', { hasText: /Step \d+ of 1000 · about .+ left/ }).waitFor({ timeout: WAIT });
    await page.locator('img.job-preview:not([hidden])').waitFor({ timeout: WAIT });
    await shot('running');
    await page.getByRole('button', { name: 'Cancel' }).click();
    await jobState('canceled');
  });

  void it('pages through the gallery of thumbnails', async () => {
    // Enough results for two pages (12 a page).
    for (let i = 1; i <= 12; i++) {
      await api('POST', '/v1/image/qwen/generate', { prompt: `gallery filler ${i}`, width: 256, height: 256, steps: 1, seed: 1000 + i });
    }
    const thumbRequests: string[] = [];
    const onRequest = (r: { url(): string }) => thumbRequests.push(r.url());
    page.on('request', onRequest);
    await tab('Gallery');
    const cards = page.locator('.grid .card');
    await page.locator('.grid .card').nth(11).waitFor({ timeout: WAIT });
    assert.equal(await cards.count(), 12);
    await page.waitForFunction(() => Array.from((globalThis as unknown as PageWindow).document.querySelectorAll('.grid img.thumb')).every((i) => i.complete && i.naturalWidth > 0), undefined, { timeout: WAIT });
    // Thumbnails, not the full images.
    assert.ok(thumbRequests.some((u) => u.includes('/thumbnail?size=256')));
    assert.ok(!thumbRequests.some((u) => u.includes('/download')), thumbRequests.join('\n'));
    page.off('request', onRequest);
    await shot('gallery');
    const firstOnPage1 = await cards.first().getAttribute('data-job-id');
    await page.getByRole('button', { name: 'Older →' }).click();
    await page.getByText('Page 2').waitFor();
    await page.waitForFunction((first) => (globalThis as unknown as PageWindow).document.querySelector('.grid .card')?.getAttribute('data-job-id') !== first, firstOnPage1);
    const page2 = await cards.count();
    assert.ok(page2 >= 1, `page 2 has ${page2}`);
    await page.getByRole('button', { name: '← Newer' }).click();
    await page.getByText('Page 1').waitFor();
    await page.waitForFunction((first) => (globalThis as unknown as PageWindow).document.querySelector('.grid .card')?.getAttribute('data-job-id') === first, firstOnPage1);
    // "Copy as curl" gives a command that works as it stands in a terminal (with the token in the environment).
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: srv.url });
    await cards.first().getByRole('button', { name: 'Copy as curl' }).click();
    await cards.first().getByText('Copied.').waitFor();
    const command = await page.evaluate(() => (globalThis as unknown as { navigator: { clipboard: { readText(): Promise<string> } } }).navigator.clipboard.readText());
    assert.match(command, /^curl .*\/v1\/image\/qwen\/generate/);
    const cwd = tempDir('kiapi-curl-');
    // Asynchronously: the server answering it runs in this process.
    await promisify(execFile)('bash', ['-c', command], { cwd, env: { ...process.env, KIAPI_AUTH_TOKEN: TOKEN }, timeout: WAIT });
    const made = await sharp(path.join(cwd, 'out.png')).metadata();
    assert.deepEqual([made.format, made.width, made.height], ['png', 256, 256]);
    fs.rmSync(cwd, { recursive: true, force: true });
  });

  void it('reuses a result\'s settings in its form', async () => {
    const first = page.locator('.grid .card').first();
    assert.match((await first.textContent()) ?? '', /gallery filler 12/);
    await first.getByRole('button', { name: 'Use these settings again' }).click();
    await generatePanel().waitFor({ state: 'visible' });
    assert.equal(await generatePanel().getByLabel('Prompt', { exact: true }).inputValue(), 'gallery filler 12');
    assert.equal(await generatePanel().getByLabel('Seed', { exact: true }).inputValue(), '1012');
    assert.equal(await generatePanel().getByLabel('Steps').inputValue(), '1');
    assert.equal(await generatePanel().getByLabel('Width (px)').inputValue(), '256');
    await submitAndWait(generatePanel().getByRole('button', { name: 'Generate' }), 'succeeded');
    assert.match((await page.locator('.job-details').textContent()) ?? '', /Seed 1012/);
  });

  void it('deletes a result and an upload', async () => {
    await tab('Gallery');
    const first = page.locator('.grid .card').first();
    await first.waitFor({ timeout: WAIT });
    const jobId = (await first.getAttribute('data-job-id'))!;
    const job = await api<{ artifacts: string[] }>('GET', `/v1/jobs/${jobId}`);
    await first.getByRole('button', { name: 'Delete' }).click();
    await page.waitForFunction((id) => !(globalThis as unknown as PageWindow).document.querySelector(`.grid .card[data-job-id="${id}"]`), jobId, { timeout: WAIT });
    const gone = await fetch(`${srv.url}/v1/files/${job.artifacts[0]}`, { headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(gone.status, 404);
    await gone.arrayBuffer();
    const uploads = page.locator('.uploads li[data-file-id]');
    await uploads.first().waitFor({ timeout: WAIT });
    const before = await uploads.count();
    await uploads.first().getByRole('button', { name: /^Delete / }).click();
    await page.waitForFunction((n) => (globalThis as unknown as PageWindow).document.querySelectorAll('.uploads li[data-file-id]').length === n - 1, before, { timeout: WAIT });
  });

  void it('is usable from the keyboard and has no serious accessibility violations', async () => {
    await page.getByRole('tab', { name: 'Gallery' }).focus();
    await page.keyboard.press('ArrowLeft');
    assert.equal(await page.getByRole('tab', { name: 'Ideogram' }).getAttribute('aria-selected'), 'true');
    await page.addScriptTag({ path: require.resolve('axe-core/axe.min.js') });
    for (const name of ['Generate', 'Edit', 'Ideogram', 'Gallery']) {
      await tab(name);
      const violations = await page.evaluate(async () => {
        const axe = (globalThis as unknown as { axe: { run(ctx: PageDocument): Promise<{ violations: Array<{ id: string; impact: string | null; help: string; nodes: Array<{ target: unknown }> }> }> } }).axe;
        const result = await axe.run((globalThis as unknown as PageWindow).document);
        return result.violations
          .filter((v) => v.impact === 'serious' || v.impact === 'critical')
          .map((v) => `${v.id} (${v.impact}): ${v.help} at ${JSON.stringify(v.nodes.map((n) => n.target))}`);
      });
      assert.deepEqual(violations, [], `${name}: ${violations.join('\n')}`);
    }
  });

  void it('fits a phone screen', async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    for (const name of ['Generate', 'Ideogram', 'Gallery']) {
      await tab(name);
      const overflow = await page.evaluate(() => (globalThis as unknown as PageWindow).document.documentElement.scrollWidth - (globalThis as unknown as PageWindow).innerWidth);
      assert.ok(overflow <= 0, `${name} is ${overflow}px wider than the phone screen`);
      await shot(`phone-${name.toLowerCase()}`);
    }
    await page.setViewportSize({ width: 1360, height: 900 });
  });

  void it('sent nothing anywhere but the kiapi server and logged no console error', () => {
    assert.deepEqual(foreignRequests, []);
    assert.deepEqual(consoleErrors, []);
  });
});
