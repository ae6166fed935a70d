#!/usr/bin/env node
// A browser softphone calling the cart: JsSIP (pinned in tests/setup.sh) in headless Chromium
// registers over SIP/WebSocket (RFC 7118) and calls the cart's AOR through the proxy.
//
//   node tests/peers/sip_softphone.mjs --ws ws://127.0.0.1:PORT --user doctor --password PW
//        --domain 127.0.0.1 --target sip:cart1@127.0.0.1 [--seconds 5] [--timeout 30]
//        [--calls local,remote] [--chromium /usr/bin/chromium] [--trust-cert PEM]
//
// --mute-check: the cart answers muted ([sip] mute_on_answer): after the first frame the page
// measures the audio energy over 2 s (mutedEnergy), prints {"event":"await-unmute"} (the test
// unmutes the cart) and measures 2 s more (unmutedEnergy).
// --dtmf KEYS: the page sends KEYS with session.sendDTMF (SIP INFO, JsSIP's default), prints
// {"event":"await-dtmf"} (the test makes the cart send its keys) and records the keys the cart
// sent (newDTMF, originator remote) in dtmfReceived; --expect-dtmf N: how many to wait for.
// --refresh-wait S: keep the first call up S more seconds with JsSIP refreshing the session
// timer by re-INVITE (session_timers_refresh_method INVITE, Session-Expires 90), and record
// the refresh's outcome (refreshes).
//
// JSSIP_DEBUG=1 in the environment turns on JsSIP's own debug log (to stderr, via the page).
//
// --ws may be wss://: --trust-cert names the server's certificate, which Chromium then accepts
// by its public key pin (--ignore-certificate-errors-spki-list, SHA-256 of the
// SubjectPublicKeyInfo), as a hospital's managed browser would trust its PBX; no other
// certificate error is ignored.
// One call per entry of --calls: `local` hangs up from JsSIP after --seconds of media;
// `remote` prints {"event":"await-remote-bye","call":N} after --seconds and waits for the
// cart's BYE. Every progress step is one JSON line on stdout ({"event":...}); the last line is
// the verdict {"verdict":"ok"|"failed", "calls":[...]} with, per call, the times from
// sending the INVITE to the 200 OK (inviteTo200Ms) and to the first decoded video frame
// (inviteToFirstFrameMs), framesDecoded, the video codec, audio packets/bytes received and
// how the call ended (originator, cause). Everything else goes to stderr.
//
// JsSIP ships CommonJS only: the page loads it from .work/node/node_modules through a small
// synchronous require() served by this script's own HTTP server on 127.0.0.1 (a page on
// 127.0.0.1 is a secure context, so getUserMedia works with Chromium's fake devices).
//
// Exit codes: 0 ok; 2 usage; 3 browser or JsSIP failed to load; 5 a call failed.

import { createRequire } from "node:module";
import { dirname, join, resolve, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { mkdtempSync, rmSync, readFileSync, existsSync, statSync } from "node:fs";
import { createServer } from "node:http";
import { X509Certificate, createHash } from "node:crypto";
import { tmpdir } from "node:os";

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, "..", "..");
const NODE_DIR = process.env.TELECART_NODE_DIR || join(ROOT, ".work", "node");

function usage(msg) {
  if (msg) console.error(`sip_softphone: ${msg}`);
  console.error("usage: sip_softphone.mjs --ws URL --user U --password P --domain D --target URI " +
                "[--seconds N] [--timeout S] [--calls local,remote] [--chromium PATH] [--trust-cert PEM]");
  process.exit(2);
}

const o = { ws: null, user: null, password: null, domain: null, target: null, seconds: 5,
            timeout: 30, calls: ["local", "remote"], chromium: "/usr/bin/chromium", trustCert: null,
            muteCheck: false, dtmf: "", expectDtmf: 0, refreshWait: 0 };
{
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => { if (i + 1 >= argv.length) usage(`${a} needs a value`); return argv[++i]; };
    if (a === "--ws") o.ws = val();
    else if (a === "--user") o.user = val();
    else if (a === "--password") o.password = val();
    else if (a === "--domain") o.domain = val();
    else if (a === "--target") o.target = val();
    else if (a === "--seconds") o.seconds = Number(val());
    else if (a === "--timeout") o.timeout = Number(val());
    else if (a === "--calls") o.calls = val().split(",");
    else if (a === "--chromium") o.chromium = val();
    else if (a === "--trust-cert") o.trustCert = val();
    else if (a === "--mute-check") o.muteCheck = true;
    else if (a === "--dtmf") o.dtmf = val();
    else if (a === "--expect-dtmf") o.expectDtmf = Number(val());
    else if (a === "--refresh-wait") o.refreshWait = Number(val());
    else usage(`unknown option ${a}`);
  }
  for (const k of ["ws", "user", "password", "domain", "target"]) if (!o[k]) usage(`missing --${k}`);
  if (o.calls.some(c => c !== "local" && c !== "remote")) usage("--calls: local or remote");
}

// The pin Chromium's --ignore-certificate-errors-spki-list takes: base64(SHA-256(SPKI DER)).
const spkiPin = (pemPath) => {
  const spki = new X509Certificate(readFileSync(pemPath)).publicKey.export({ type: "spki", format: "der" });
  return createHash("sha256").update(spki).digest("base64");
};

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const log = (...a) => console.error("sip_softphone:", ...a);

let chromium;
try {
  chromium = createRequire(join(NODE_DIR, "package.json"))("playwright-core").chromium;
} catch (e) {
  log(`cannot load playwright-core from ${NODE_DIR}: ${e.message} (run tests/setup.sh)`);
  process.exit(3);
}
const MODULES = join(NODE_DIR, "node_modules");
if (!existsSync(join(MODULES, "jssip", "package.json"))) {
  log(`no jssip in ${MODULES} (run tests/setup.sh)`);
  process.exit(3);
}

// The page and node_modules, read-only, nothing outside MODULES.
const server = createServer((req, res) => {
  const url = new URL(req.url, "http://x");
  if (url.pathname === "/") {
    res.writeHead(200, { "content-type": "text/html" });
    res.end("<!doctype html><title>softphone</title><body></body>");
    return;
  }
  const path = normalize(join(MODULES, decodeURIComponent(url.pathname.replace(/^\/m\//, ""))));
  if (!url.pathname.startsWith("/m/") || !path.startsWith(MODULES + "/") ||
      !existsSync(path) || !statSync(path).isFile()) {
    res.writeHead(404);
    res.end();
    return;
  }
  res.writeHead(200, { "content-type": "text/plain" });
  res.end(readFileSync(path));
});
await new Promise(r => server.listen(0, "127.0.0.1", r));
const pageUrl = `http://127.0.0.1:${server.address().port}/`;

// Runs in the page: a synchronous CommonJS require over /m/ (node_modules).
function installRequire() {
  const cache = {};
  const fetchText = (path) => {
    const x = new XMLHttpRequest();
    x.open("GET", "/m/" + path, false);
    x.send();
    return x.status === 200 ? x.responseText : null;
  };
  const join = (base, rel) => {
    const parts = base.split("/").slice(0, -1);
    for (const p of rel.split("/")) {
      if (p === "..") parts.pop(); else if (p !== ".") parts.push(p);
    }
    return parts.join("/");
  };
  const resolveFile = (path) => {
    const exact = /\.(js|json)$/.test(path);
    for (const cand of exact ? [path] : [path + ".js", path + "/index.js", path]) {
      const text = fetchText(cand);
      if (text !== null) return [cand, text];
    }
    return [null, null];
  };
  const resolvePackage = (name) => {
    const pkgText = fetchText(name + "/package.json");
    if (pkgText === null) throw new Error(`module ${name} not found`);
    const pkg = JSON.parse(pkgText);
    const entry = (typeof pkg.browser === "string" && pkg.browser) || pkg.main || "index.js";
    return resolveFile(join(name + "/package.json", entry));
  };
  const load = (from, spec) => {
    let file, text;
    if (spec.startsWith(".")) [file, text] = resolveFile(join(from, spec));
    else [file, text] = resolvePackage(spec);
    if (file === null) throw new Error(`cannot resolve ${spec} from ${from}`);
    if (cache[file]) return cache[file].exports;
    const module = { exports: {} };
    cache[file] = module;
    if (file.endsWith(".json")) {
      module.exports = JSON.parse(text);
      return module.exports;
    }
    const fn = new Function("require", "module", "exports", "process", text + "\n//# sourceURL=" + file);
    fn((s) => load(file, s), module, module.exports, { env: {}, browser: true });
    return module.exports;
  };
  window.require = (spec) => load("", spec);
}

// Runs in the page: one call, resolved with its record.
async function pageCall({ ws, user, password, domain, target, seconds, timeout, mode, muteCheck,
                          dtmf, expectDtmf, refreshWait }) {
  const JsSIP = window.JsSIP || (window.JsSIP = window.require("jssip"));
  if (window.JSSIP_DEBUG) JsSIP.debug.enable("JsSIP:*");
  if (!window.ua) {
    const socket = new JsSIP.WebSocketInterface(ws);
    const ua = new JsSIP.UA({
      sockets: [socket], uri: `sip:${user}@${domain}`, password,
      register: true, session_timers: true,
      session_timers_refresh_method: refreshWait > 0 ? "INVITE" : "UPDATE",
    });
    await new Promise((ok, fail) => {
      ua.on("registered", ok);
      ua.on("registrationFailed", (e) => fail(new Error(`registration failed: ${e.cause}`)));
      ua.start();
    });
    window.ua = ua;
    window.progress("registered");
  }
  const t = { };
  const rec = { mode, dtmfReceived: "", refreshes: [] };
  const ended = new Promise((resolve) => {
    const session = window.ua.call(target, {
      mediaConstraints: { audio: true, video: true },
      pcConfig: { iceServers: [] },
      eventHandlers: {
        // `sdp` (local offer) fires as the INVITE goes out, after ICE gathering; `sending`
        // fires before the offer is even made.
        sending: () => { t.sending = performance.now(); },
        peerconnection: (e) => {
          // A softphone plays what it receives: so does this one (Chromium measures the
          // energy of played audio).
          e.peerconnection.addEventListener("track", (ev) => {
            if (ev.track.kind !== "audio") return;
            const el = document.createElement("audio");
            el.autoplay = true;
            el.srcObject = ev.streams[0] || new MediaStream([ev.track]);
            document.body.appendChild(el);
          });
        },
        accepted: () => { t.ok = performance.now(); },
        confirmed: () => { window.progress("confirmed"); },
        newDTMF: (e) => { if (e.originator === "remote") rec.dtmfReceived += e.dtmf.tone; },
        sdp: (e) => {
          if (e.originator === "local" && e.type === "offer") {
            // The first offer is the INVITE's; later ones are session refreshes (re-INVITE).
            // (JsSIP reports a re-INVITE's offer twice, a millisecond apart: one refresh.)
            const at = t.invite ? Math.round(performance.now() - t.invite) : 0;
            const last = rec.refreshes[rec.refreshes.length - 1];
            if (!t.invite) t.invite = performance.now();
            else if (!last || at - last.sentMs > 1000) rec.refreshes.push({ sentMs: at, answered: false });
          } else if (e.originator === "remote" && e.type === "answer" && rec.refreshes.length) {
            rec.refreshes[rec.refreshes.length - 1].answered = true;
          }
        },
        "peerconnection:setremotedescriptionfailed": (e) => {
          rec.setRemoteDescriptionFailed = String(e && e.message || e);
        },
        failed: (e) => resolve({ originator: e.originator, cause: e.cause, failed: true }),
        ended: (e) => resolve({ originator: e.originator, cause: e.cause }),
      },
    });
    window.session = session;
  });
  const race = (p, ms) => Promise.race([p, new Promise(r => setTimeout(() => r(null), ms))]);
  const stats = async () => {
    const pc = window.session.connection;
    const out = { framesDecoded: 0, audioPacketsReceived: 0, audioBytesReceived: 0 };
    if (!pc) return out;
    const report = await pc.getStats();
    const codecs = {};
    report.forEach(s => { if (s.type === "codec") codecs[s.id] = s.mimeType; });
    report.forEach(s => {
      if (s.type !== "inbound-rtp") return;
      if (s.kind === "video") {
        out.framesDecoded = s.framesDecoded || 0;
        out.videoCodec = codecs[s.codecId];
        out.frameWidth = s.frameWidth;
      } else if (s.kind === "audio") {
        out.audioPacketsReceived = s.packetsReceived || 0;
        out.audioBytesReceived = s.bytesReceived || 0;
        out.audioCodec = codecs[s.codecId];
        out.totalAudioEnergy = s.totalAudioEnergy;
      }
    });
    return out;
  };
  // Media: until the first decoded frame (or the timeout), then `seconds` more.
  const deadline = performance.now() + timeout * 1000;
  let s = await stats();
  let early = null;
  while (performance.now() < deadline) {
    early = await race(ended, 100);
    if (early) break;
    s = await stats();
    if (s.framesDecoded > 0 && !t.frame) t.frame = performance.now();
    if (t.frame && performance.now() - t.frame > seconds * 1000) break;
  }
  const sleep = (ms) => new Promise(r => setTimeout(r, ms));
  const energy = async () => (await stats()).totalAudioEnergy || 0;
  if (!early && muteCheck && t.frame) {
    await sleep(1500);
    const e0 = await energy();
    await sleep(2000);
    rec.mutedEnergy = (await energy()) - e0;
    window.progress("await-unmute");
    await sleep(1500);
    const e1 = await energy();
    await sleep(2000);
    rec.unmutedEnergy = (await energy()) - e1;
  }
  if (!early && dtmf && t.frame) {
    window.session.sendDTMF(dtmf);
    window.progress("await-dtmf");
    const until = performance.now() + 10000;
    while (rec.dtmfReceived.length < expectDtmf && performance.now() < until) await sleep(100);
    // Let JsSIP's own INFOs finish (500 ms between keys).
    await sleep(500 * dtmf.length);
  }
  if (!early && refreshWait > 0 && t.frame) {
    const before = (await stats()).framesDecoded;
    early = await race(ended, refreshWait * 1000);
    rec.framesDuringRefreshWait = (await stats()).framesDecoded - before;
  }
  if (!early) s = await stats();
  Object.assign(rec, s);
  rec.inviteTo200Ms = t.ok && t.invite ? t.ok - t.invite : null;
  rec.callTo200Ms = t.ok && t.sending ? t.ok - t.sending : null;
  rec.inviteToFirstFrameMs = t.frame && t.invite ? t.frame - t.invite : null;
  if (early) {
    rec.end = early;
    return rec;
  }
  if (mode === "local") {
    window.session.terminate();
    rec.end = await race(ended, 10000);
  } else {
    window.progress("await-remote-bye");
    rec.end = await race(ended, timeout * 1000);
  }
  return rec;
}

const userDataDir = mkdtempSync(join(tmpdir(), "telecart-softphone-"));
let context;
let code = 0;
const verdict = { verdict: "failed", calls: [] };
try {
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: o.chromium, headless: true,
      args: ["--no-sandbox", "--disable-gpu", "--use-fake-device-for-media-stream",
             "--use-fake-ui-for-media-stream", "--allow-loopback-in-peer-connection",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", "--autoplay-policy=no-user-gesture-required",
             ...(o.trustCert ? [`--ignore-certificate-errors-spki-list=${spkiPin(o.trustCert)}`] : [])],
      permissions: ["camera", "microphone"],
    });
  } catch (e) {
    log(`chromium failed to launch: ${e.message.split("\n")[0]}`);
    process.exit(3);
  }
  const page = context.pages()[0] || await context.newPage();
  page.on("console", m => console.error(`[page ${m.type()}] ${m.text()}`));
  page.on("pageerror", e => console.error(`[page exception] ${e.message}`));
  let callNo = 0;
  await page.exposeFunction("progress", (event) => emit({ event, call: callNo }));
  await page.goto(pageUrl);
  await page.evaluate(installRequire);
  if (process.env.JSSIP_DEBUG) await page.evaluate(() => { window.JSSIP_DEBUG = true; });
  for (const mode of o.calls) {
    callNo += 1;
    const rec = await page.evaluate(pageCall, {
      ws: o.ws, user: o.user, password: o.password, domain: o.domain, target: o.target,
      seconds: o.seconds, timeout: o.timeout, mode, muteCheck: o.muteCheck, dtmf: o.dtmf,
      expectDtmf: o.expectDtmf, refreshWait: callNo === 1 ? o.refreshWait : 0,
    });
    rec.call = callNo;
    emit({ event: "call-ended", ...rec });
    verdict.calls.push(rec);
    // The cart takes a moment to be idle again after the BYE.
    await new Promise(r => setTimeout(r, 500));
  }
  const good = verdict.calls.every(c => c.framesDecoded > 0 && c.end && !c.end.failed &&
    c.end.originator === (c.mode === "local" ? "local" : "remote"));
  verdict.verdict = good ? "ok" : "failed";
  if (!good) code = 5;
} catch (e) {
  log(`error: ${e.message}`);
  verdict.error = e.message;
  code = 5;
} finally {
  emit(verdict);
  await context?.close().catch(() => {});
  server.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
process.exit(code);
