// Drives Debian's chromium through the centre's fleet view for
// tests/tests/sites.rs: the list's site column and its filter by site.
// Input (environment): BASE (http://127.0.0.1:PORT), OUT (directory for
// screenshots), CHROMIUM (executable).
// Output: one JSON line on stdout with what the pages showed.
import { join } from "node:path";
import { env, withBrowser } from "./browser.mjs";

const BASE = env("BASE"), OUT = env("OUT");
const out = { bad_responses: [], page_errors: [] };
// Rows as {shipment id: the sites cell's text}.
const rows = (page) => page.$$eval("table.list tbody tr", (rs) =>
  Object.fromEntries(rs.map((r) => [r.dataset.shipment, r.querySelector("td.sites").textContent.trim()])));
await withBrowser(async (browser) => {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 700 } });
  const page = await ctx.newPage();
  // Every failed response but the browser's own favicon request.
  page.on("response", (r) => {
    if (r.status() >= 400 && !r.url().endsWith("/favicon.ico")) { out.bad_responses.push(`${r.status()} ${r.url()}`); }
  });
  page.on("pageerror", (e) => out.page_errors.push(String(e)));
  await page.goto(`${BASE}/`);
  await page.waitForSelector("table.list tbody tr");
  out.header = await page.$$eval("table.list thead th", (ths) => ths.map((t) => t.textContent.trim()));
  out.all = await rows(page);
  out.options = await page.$$eval("#site option", (os) => os.map((o) => o.value));
  await page.screenshot({ path: join(OUT, "fleet-all.png"), fullPage: true });

  // Choosing a site submits the filter: the address carries it.
  await Promise.all([page.waitForURL(/\?site=/), page.selectOption("#site", "gw-b")]);
  await page.waitForSelector("table.list tbody tr");
  out.filtered_url = page.url();
  out.filtered = await rows(page);
  out.selected = await page.$eval("#site", (s) => s.value);
  out.poll_src = await page.$eval("#live", (m) => m.dataset.src);
  await page.screenshot({ path: join(OUT, "fleet-gw-b.png"), fullPage: true });
  // The page polls its fragment: the list it swaps in keeps the filter.
  // (Polled from here: the page's CSP allows no evaluated script.)
  for (let i = 0; i < 200 && !/^updated/.test(await page.textContent("#live-status")); i++) {
    await page.waitForTimeout(100);
  }
  out.polled = await page.textContent("#live-status");
  out.after_poll = await rows(page);

  // Back to every site.
  await Promise.all([page.waitForURL((u) => !/site=gw-b/.test(u.search)), page.selectOption("#site", "")]);
  await page.waitForSelector("table.list tbody tr");
  out.back = await rows(page);

  // Phone: the column is labelled in the stacked layout.
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true });
  const p2 = await phone.newPage();
  await p2.goto(`${BASE}/?site=gw-a`);
  await p2.waitForSelector("table.list tbody tr");
  await p2.screenshot({ path: join(OUT, "fleet-gw-a-phone.png"), fullPage: true });
});
console.log(JSON.stringify(out));
