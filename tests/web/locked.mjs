// Drives Debian's chromium through the dashboard of a daemon that needs the
// token for reads (bound beyond loopback), for tests/tests/dashboard.rs.
// Input (environment): BASE, SHIPMENT, TOKEN, OUT (screenshots), CHROMIUM.
// Output: one JSON line on stdout with what the pages showed.
import { join } from "node:path";
import { env, withBrowser } from "./browser.mjs";

const BASE = env("BASE"), SHIPMENT = env("SHIPMENT"), TOKEN = env("TOKEN"), OUT = env("OUT");
const out = { console_errors: [], page_errors: [] };
await withBrowser(async (browser) => {
  const phone = await browser.newContext({
    viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
  });
  const page = await phone.newPage();
  page.on("pageerror", (e) => out.page_errors.push(String(e)));
  const resp = await page.goto(`${BASE}/`);
  out.first_status = resp.status();
  await page.waitForSelector("#token-form");
  out.rows_before = await page.$$eval("table.list tbody tr", (rs) => rs.length);
  out.text_before = await page.textContent("main");
  await page.screenshot({ path: join(OUT, "locked-phone.png"), fullPage: true });
  // A wrong token: refused, said so, not kept.
  await page.fill("#token-input", "not-the-token");
  await page.click("#token-form button[type=submit]");
  await page.waitForFunction(() => document.getElementById("token-error")?.textContent === "wrong token");
  out.kept_after_wrong = await page.evaluate(() => localStorage.getItem("coldchain.token"));
  // The right one: the list appears.
  await page.fill("#token-input", TOKEN);
  await page.click("#token-form button[type=submit]");
  await page.waitForSelector("table.list tbody tr");
  out.rows_after = await page.$$eval("table.list tbody tr", (rs) => rs.map((r) => r.dataset.shipment));
  await page.screenshot({ path: join(OUT, "unlocked-phone.png"), fullPage: true });
  // Another page: the token kept in the browser loads its content at once.
  await page.goto(`${BASE}/shipments/${encodeURIComponent(SHIPMENT)}`);
  await page.waitForSelector("svg.chart");
  out.chart_readings = await page.$eval("svg.chart", (svg) => Number(svg.dataset.readings));
  await phone.close();
});
console.log(JSON.stringify(out));
