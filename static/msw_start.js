// Starting the page: the config (with the URL's overrides for tests and benchmarks), the click
// worker's decoder, and on-device mode where it is asked for or runs well. If no backend works,
// server mode asks the server to decode instead (trigger "fallback").
import { DEVICE_KEY, store } from "./msw_device.js";

function absoluteUrls(cfg, base) {
  const abs = (u) => new URL(u, base).href;
  cfg.ort.base = abs(cfg.ort.base);
  for (const k of ["decoder", "decoder_web", "decoder_fast", "encoder"]) if (cfg[k]) cfg[k].url = abs(cfg[k].url);
  for (const ex of cfg.examples || []) ex.url = abs(ex.url);
}

async function loadConfig(q, standalone) {
  const configUrl = new URL(standalone ? standalone.configUrl : "/msw/config.json", location.href);
  const cfg = await (await fetch(configUrl)).json();
  absoluteUrls(cfg, configUrl);   // workers resolve relative URLs against their own script
  if (q.get("msw_threads")) cfg.threads = +q.get("msw_threads");
  if (q.get("msw_decoder") === "decoder_web" && cfg.decoder_web) cfg.decoder = cfg.decoder_web;
  if (q.get("msw_hover") === "exact") cfg.hover = "exact";
  if (q.get("msw_hover_delay")) cfg.hoverDelayMs = +q.get("msw_hover_delay");   // tests: a slow preview
  if (q.get("msw_hover_retry")) cfg.hoverRetryMs = +q.get("msw_hover_retry");   // tests: a quicker retry
  if (q.get("msw_hover_slow")) cfg.hoverSlowMs = +q.get("msw_hover_slow");   // tests: a busy machine's previews
  return cfg;
}

// opener: msw_open.js (the examples); device: msw_device.js
export function startPage({ S, debug, status, clicks, device, opener, trigger, standalone }) {
  const q = new URLSearchParams(location.search);   // overrides for tests and benchmarks
  const canEncode = typeof OffscreenCanvas !== "undefined" && typeof createImageBitmap === "function" &&
                    typeof CompressionStream === "function";
  // Asked for on-device mode (the site, ?msw_device=1, or this browser's remembered choice): it
  // starts now, before anything has loaded, so the server's upload is never offered meanwhile.
  const remembered = store.get(DEVICE_KEY);
  const asked = q.get("msw_device") !== null ? q.get("msw_device") === "1" : remembered === "1";
  if (canEncode && (standalone || asked)) device.set(true, false);
  else document.documentElement.classList.remove("msw-device-mode");   // set early by the page: not possible here

  function offerDevice(cfg, r) {   // never fatal for decoding: server mode works without it
    if (!cfg.encoder || !canEncode) {
      if (standalone) throw new Error("this browser cannot encode images (it lacks OffscreenCanvas or CompressionStream)");
      if (S.device) { device.set(false, false); status.say(cfg.encoder_off || "on-device mode is not available here", 8000); }
      device.note();
      return;
    }
    opener.examples();
    device.showToggle(!standalone);   // offered where it can run; the static site has no other mode
    // On by default only with a hardware GPU (WebGPU is chosen only for one): WASM encodes in seconds.
    if (!S.device && q.get("msw_device") === null && remembered === null && r.hardwareGpu) device.set(true, false);
    if (S.device) device.ensureEncoder().catch(() => {});
    device.note();
  }

  function loaded(r) {
    S.decoder = "ready"; S.backend = r.backend; S.threads = r.threads; S.model = r; S.transferred = r.transferred;
    S.backendLabel = r.backend === "webgpu" ? "WebGPU" : r.threads > 1 ? `WASM (${r.threads} threads)` : "WASM (1 thread)";
    Object.assign(debug, { ready: true, backend: r.backend, threads: r.threads, modelBytes: r.bytes, cached: r.cached,
                           readyCheck: r.check });
    clicks.loaded.ok();
    status.render();
  }
  function failed(err) {
    S.error = String(err.message || err);
    debug.error = S.error;
    clicks.loaded.fail(err);
    if (S.device && !standalone) device.set(false, false);   // server mode: the upload comes back
    S.decoder = "failed";
    status.render();
    if (!standalone) trigger("fallback", { reason: S.error });
  }
  (async () => {
    try {
      const cfg = await loadConfig(q, standalone);
      S.cfg = cfg;
      S.maxPoints = cfg.max_points || S.maxPoints;
      if (clicks.prompts.st.queued) clicks.run();   // clicked before the config came: the server decodes them
      if (!cfg.decoder) throw new Error("the server has no exported decoder");
      const r = await clicks.load(cfg, q.get("msw_backend"));
      loaded(r);
      await clicks.feed();
      offerDevice(cfg, r);
    } catch (err) {
      failed(err);
    }
  })();
}
