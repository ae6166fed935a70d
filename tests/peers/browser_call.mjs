#!/usr/bin/env node
// Headless Chromium as the remote specialist: opens the cart's console page and makes a call.
//
//   node tests/peers/browser_call.mjs URL [--seconds 10] [--screenshot out.png]
//        [--timeout 20] [--call-timeout 20] [--chromium /usr/bin/chromium] [--arg --flag ...]
//        [--restart-ice-at S]   (calls window.telecart.restartIce() S seconds in; the output
//                                then has "restart": {ok, ms, framesDecodedBefore})
// The output also has "framesHistory": [[unix ms, framesDecoded], ...], one a second.
//
// Waits for window.telecart, awaits window.telecart.call() (resolves when connected), then
// polls await window.telecart.stats() once a second for --seconds and prints the last stats
// object as ONE JSON line on stdout (nothing else goes to stdout). Progress, the page's
// console and errors go to stderr. Calls window.telecart.hangup() at the end if it exists.
//
// Exit codes: 0 ok; 2 usage; 3 browser failed to launch; 4 page failed to load or
// window.telecart never appeared; 5 call() rejected or timed out; 6 stats() failed.
//
// playwright-core comes from .work/node (tests/peers/setup.sh), or $TELECART_NODE_DIR.
// It drives Debian's /usr/bin/chromium; it never downloads a browser.

import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, "..", "..");
const NODE_DIR = process.env.TELECART_NODE_DIR || join(ROOT, ".work", "node");

function usage(msg) {
  if (msg) console.error(`browser_call: ${msg}`);
  console.error("usage: browser_call.mjs URL [--seconds N] [--screenshot PATH] [--timeout S] " +
                "[--call-timeout S] [--chromium PATH] [--arg FLAG]... [--quiet]");
  process.exit(2);
}

function parseArgs(argv) {
  const o = { url: null, seconds: 10, screenshot: null, timeout: 20, callTimeout: 20,
              chromium: "/usr/bin/chromium", extra: [], quiet: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => { if (i + 1 >= argv.length) usage(`${a} needs a value`); return argv[++i]; };
    if (a === "--seconds") o.seconds = Number(val());
    else if (a === "--screenshot") o.screenshot = val();
    else if (a === "--timeout") o.timeout = Number(val());
    else if (a === "--call-timeout") o.callTimeout = Number(val());
    else if (a === "--chromium") o.chromium = val();
    else if (a === "--arg") o.extra.push(val());
    else if (a === "--quiet") o.quiet = true;
    else if (a === "--restart-ice-at") o.restartAt = Number(val());
    else if (a === "-h" || a === "--help") usage();
    else if (a.startsWith("--")) usage(`unknown option ${a}`);
    else if (!o.url) o.url = a;
    else usage(`unexpected argument ${a}`);
  }
  if (!o.url) usage("missing URL");
  for (const k of ["seconds", "timeout", "callTimeout"]) {
    if (!Number.isFinite(o[k]) || o[k] < 0) usage(`bad --${k}`);
  }
  return o;
}

const opts = parseArgs(process.argv.slice(2));
const log = (...a) => { if (!opts.quiet) console.error("browser_call:", ...a); };
const fail = (code, msg) => { console.error(`browser_call: ${msg}`); return code; };

function withTimeout(promise, seconds, what) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${seconds} s`)), seconds * 1000);
  });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

let chromium;
try {
  chromium = createRequire(join(NODE_DIR, "package.json"))("playwright-core").chromium;
} catch (e) {
  console.error(`browser_call: cannot load playwright-core from ${NODE_DIR}: ${e.message}` +
                " (run tests/peers/setup.sh)");
  process.exit(3);
}

async function main() {
  const t0 = Date.now();
  const userDataDir = mkdtempSync(join(tmpdir(), "telecart-chromium-"));
  const args = [
    "--no-sandbox", "--disable-gpu",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--autoplay-policy=no-user-gesture-required",
    ...opts.extra,
  ];
  let context;
  try {
    // A persistent context is the only way to give Chromium our own --user-data-dir.
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: opts.chromium, headless: true, args,
      viewport: { width: 1280, height: 720 },
      permissions: ["camera", "microphone"],
    });
  } catch (e) {
    rmSync(userDataDir, { recursive: true, force: true });
    return fail(3, `chromium failed to launch: ${e.message.split("\n")[0]}`);
  }
  log(`chromium up in ${Date.now() - t0} ms`);
  const cleanup = async () => {
    await context.close().catch(() => {});
    rmSync(userDataDir, { recursive: true, force: true });
  };
  try {
    const page = context.pages()[0] || await context.newPage();
    page.on("console", m => { if (!opts.quiet) console.error(`[page ${m.type()}] ${m.text()}`); });
    page.on("pageerror", e => console.error(`[page exception] ${e.message}`));

    try {
      const resp = await page.goto(opts.url, { timeout: opts.timeout * 1000, waitUntil: "load" });
      if (resp && !resp.ok()) return fail(4, `page ${opts.url} answered HTTP ${resp.status()}`);
      await page.waitForFunction(
        () => typeof window.telecart === "object" && window.telecart !== null &&
              typeof window.telecart.call === "function" && typeof window.telecart.stats === "function",
        null, { timeout: opts.timeout * 1000 });
    } catch (e) {
      return fail(4, `page ${opts.url} failed or has no window.telecart: ${e.message.split("\n")[0]}`);
    }
    log(`page ready in ${Date.now() - t0} ms`);

    const tCall = Date.now();
    try {
      await withTimeout(page.evaluate(() => window.telecart.call()), opts.callTimeout, "telecart.call()");
    } catch (e) {
      return fail(5, `call failed: ${e.message.split("\n")[0]}`);
    }
    log(`call connected in ${Date.now() - tCall} ms`);

    let last = null;
    let restart = null;
    const history = [];  // [unix ms, framesDecoded] once a second
    const until = Date.now() + opts.seconds * 1000;
    const restartAt = opts.restartAt === undefined ? null : Date.now() + opts.restartAt * 1000;
    for (;;) {
      if (restartAt !== null && restart === null && Date.now() >= restartAt) {
        // window.telecart.restartIce(): new offer PATCHed to the cart, its answer applied.
        const before = await page.evaluate(() => window.telecart.stats());
        const t = Date.now();
        try {
          await withTimeout(page.evaluate(() => window.telecart.restartIce()), 10, "telecart.restartIce()");
          restart = { ok: true, ms: Date.now() - t, framesDecodedBefore: before.framesDecoded };
        } catch (e) {
          restart = { ok: false, error: e.message.split("\n")[0], framesDecodedBefore: before.framesDecoded };
        }
        log(`ICE restart ${JSON.stringify(restart)}`);
      }
      try {
        last = await withTimeout(page.evaluate(() => window.telecart.stats()), 10, "telecart.stats()");
      } catch (e) {
        return fail(6, `stats failed: ${e.message.split("\n")[0]}`);
      }
      log(`stats ${JSON.stringify(last)}`);
      history.push([Date.now(), last.framesDecoded]);
      const left = until - Date.now();
      if (left <= 0) break;
      await new Promise(r => setTimeout(r, Math.min(1000, left)));
    }
    if (opts.screenshot) {
      await page.screenshot({ path: opts.screenshot });
      log(`screenshot ${opts.screenshot}`);
    }
    await page.evaluate(() => window.telecart.hangup ? window.telecart.hangup() : null).catch(() => {});
    if (restart !== null) last.restart = restart;
    last.framesHistory = history;
    process.stdout.write(JSON.stringify(last) + "\n");
    return 0;
  } finally {
    await cleanup();
  }
}

main().then(code => process.exit(code), e => {
  console.error(`browser_call: ${e.stack || e}`);
  process.exit(1);
});
