// Drives Debian's chromium through the dashboard of a daemon that needs a
// login for reads (bound beyond loopback), for tests/tests/dashboard.rs.
// Input (environment): BASE, SHIPMENT, USER, PASSWORD, OUT (screenshots), CHROMIUM.
// Output: one JSON line on stdout with what the pages showed.
import { join } from "node:path";
import { env, withBrowser } from "./browser.mjs";

const BASE = env("BASE"), SHIPMENT = env("SHIPMENT"), OUT = env("OUT");
const out = { console_errors: [], page_errors: [] };
await withBrowser(async (browser) => {
  const phone = await browser.newContext({
    viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
  });
  const page = await phone.newPage();
  page.on("pageerror", (e) => out.page_errors.push(String(e)));
  const resp = await page.goto(`${BASE}/`);
  out.first_status = resp.status();
  out.text_before = await page.textContent("main");
  out.rows_before = await page.$$eval("table.list tbody tr", (rs) => rs.length);
  // The page without data sends the browser to the login page.
  await page.waitForSelector("#login-form");
  out.login_url = page.url();
  await page.screenshot({ path: join(OUT, "locked-phone.png"), fullPage: true });
  // A wrong password: refused, said so, no session.
  await page.fill("#login-name", env("USER"));
  await page.fill("#login-password", "not the password");
  await page.click("#login-submit");
  await page.waitForSelector("#login-error:not(:empty)");
  out.wrong_error = await page.textContent("#login-error");
  out.cookies_after_wrong = (await phone.cookies()).length;
  // The right one: the list appears.
  await page.fill("#login-password", env("PASSWORD"));
  await page.click("#login-submit");
  await page.waitForSelector("table.list tbody tr");
  out.rows_after = await page.$$eval("table.list tbody tr", (rs) => rs.map((r) => r.dataset.shipment));
  out.cookie = (await phone.cookies()).map((c) => ({ name: c.name, httpOnly: c.httpOnly, sameSite: c.sameSite }));
  out.local_storage_keys = await page.evaluate(() => Object.keys(localStorage));
  await page.screenshot({ path: join(OUT, "unlocked-phone.png"), fullPage: true });
  // Another page: the session opens its content at once.
  await page.goto(`${BASE}/shipments/${encodeURIComponent(SHIPMENT)}`);
  await page.waitForSelector("svg.chart");
  out.chart_readings = await page.$eval("svg.chart", (svg) => Number(svg.dataset.readings));
  await phone.close();
});
console.log(JSON.stringify(out));
