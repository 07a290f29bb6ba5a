// Drives Debian's chromium through the dashboard for tests/tests/dashboard.rs.
// Input (environment): BASE (http://127.0.0.1:PORT), SHIPMENT, ALERT (id of an
// open alert of SHIPMENT), XSS_SHIPMENT (a shipment whose id and product hold
// markup), USER and PASSWORD (a logistics account), OUT (directory for
// screenshots), CHROMIUM (executable).
// Output: one JSON line on stdout with what the pages showed.
import { join } from "node:path";
import { env, withBrowser } from "./browser.mjs";

const BASE = env("BASE"), SHIPMENT = env("SHIPMENT"), ALERT = env("ALERT");
const XSS = env("XSS_SHIPMENT"), OUT = env("OUT");
const out = { console_errors: [], page_errors: [] };
await withBrowser(async (browser) => {
  const watch = (page) => {
    page.on("console", (m) => { if (m.type() === "error") out.console_errors.push(m.text()); });
    page.on("pageerror", (e) => out.page_errors.push(String(e)));
    page.on("dialog", (d) => { out.page_errors.push(`unexpected dialog: ${d.message()}`); d.dismiss(); });
  };
  const shipmentUrl = `${BASE}/shipments/${encodeURIComponent(SHIPMENT)}`;

  // Desktop.
  const desk = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await desk.newPage();
  watch(page);
  await page.goto(`${BASE}/`);
  await page.waitForSelector("table.list tbody tr");
  out.list_rows = await page.$$eval("table.list tbody tr", (rs) => rs.map((r) => r.dataset.shipment));
  out.list_text = await page.textContent("table.list");
  out.xss_fired = await page.evaluate(() => window.__xss === 1);
  await page.screenshot({ path: join(OUT, "list-desktop.png"), fullPage: true });

  await page.click(`tr[data-shipment="${SHIPMENT.replace(/"/g, '\\"')}"] a`);
  await page.waitForSelector("svg.chart polyline.readings");
  out.shipment_url = page.url();
  out.chart = await page.$eval("svg.chart", (svg) => ({
    data_readings: Number(svg.dataset.readings),
    data_faults: Number(svg.dataset.faults),
    polyline_points: [...svg.querySelectorAll("polyline.readings")]
      .map((p) => p.points.numberOfItems).reduce((a, b) => a + b, 0),
    zone_bands: svg.querySelectorAll("rect.zone").length,
    excursions: svg.querySelectorAll("rect.excursion").length,
  }));
  out.gauge = await page.$eval(".gauge", (g) => g.dataset.remainingMs || null);
  out.alert_state_before = await page.getAttribute(`li.alert[data-alert="${ALERT}"]`, "data-state");
  await page.screenshot({ path: join(OUT, "shipment-desktop.png"), fullPage: true });

  // Read without a login (loopback), nothing to act with: no button.
  out.ack_buttons_anonymous = await page.locator("button.ack").count();
  // Log in from the header link; back on the same page, acknowledge.
  await page.click("#login-link");
  await page.waitForSelector("#login-form");
  out.login_asked = true;
  await page.fill("#login-name", env("USER"));
  await page.fill("#login-password", env("PASSWORD"));
  await page.click("#login-submit");
  await page.waitForSelector("table.list tbody tr");
  await page.goto(shipmentUrl);
  await page.waitForSelector("svg.chart polyline.readings");
  await page.click(`button.ack[data-alert="${ALERT}"]`);
  await page.waitForSelector("#act-dialog[open]");
  await page.fill("#act-comment", "lid closed <script>window.__xss=1</script>");
  await page.screenshot({ path: join(OUT, "ack-dialog-desktop.png") });
  await page.click("#act-submit");
  await page.waitForSelector(`li.alert[data-alert="${ALERT}"]:not([data-state="open"])`, { timeout: 15000 });
  out.alert_state_after = await page.getAttribute(`li.alert[data-alert="${ALERT}"]`, "data-state");
  out.ack_text = await page.textContent(`li.alert[data-alert="${ALERT}"] .ack-info`);
  out.who = await page.textContent("#who");
  out.local_storage_keys = await page.evaluate(() => Object.keys(localStorage));
  out.xss_fired = out.xss_fired || await page.evaluate(() => window.__xss === 1);
  await page.screenshot({ path: join(OUT, "shipment-acknowledged-desktop.png"), fullPage: true });

  // The markup-laden shipment shows as text.
  await page.goto(`${BASE}/shipments/${encodeURIComponent(XSS)}`);
  await page.waitForSelector("h1");
  out.xss_title = await page.textContent("h1");
  out.xss_fired = out.xss_fired || await page.evaluate(() => window.__xss === 1);
  await desk.close();

  // Phone.
  const phone = await browser.newContext({
    viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
  });
  const p2 = await phone.newPage();
  watch(p2);
  const overflow = () => p2.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  await p2.goto(`${BASE}/`);
  await p2.waitForSelector("table.list tbody tr");
  out.phone_list_overflow_px = await overflow();
  await p2.screenshot({ path: join(OUT, "list-phone.png"), fullPage: true });
  await p2.goto(shipmentUrl);
  await p2.waitForSelector("svg.chart");
  out.phone_shipment_overflow_px = await overflow();
  await p2.screenshot({ path: join(OUT, "shipment-phone.png"), fullPage: true });
  await phone.close();
});
console.log(JSON.stringify(out));
