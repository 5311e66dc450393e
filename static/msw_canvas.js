// The browser-mode segment canvas. Prompts are decoded in Web Workers (msw_worker.js); the server
// only hears about a mask when the user keeps or exports it (triggers "keep", "export"). If no
// backend works, the widget asks the server to decode instead (trigger "fallback").
//
// The page is a small state machine, so any order of events ends in a working canvas:
//   decoder: loading -> ready | failed          (the click worker, started at once)
//   image:   none -> uploading -> fetching -> ready   (per upload; the embedding is fetched as
//            soon as the server sends the image, whether or not the decoder has loaded)
// Clicks made before both are ready are kept (markers shown) and decoded as soon as they are.
//
// On-device mode ("On this device"; the only mode of the static site, `mount({standalone})`):
// the image is opened in the page, resized and encoded in the click worker, and kept objects and
// downloads stay here: nothing about the image is sent anywhere.
//   encoder: off -> loading -> ready | failed;   image: none -> encoding -> ready
import { preprocessShape } from "./msw_resize.js";
import { colorFor, toHalf } from "./msw_runtime.js";

const HTML = `
<div class="msw-bar">
  <div class="msw-modes" role="radiogroup" aria-label="Click adds">
    <button type="button" data-mode="add" class="on" role="radio" aria-checked="true"
      title="click: include point">+ Add</button>
    <button type="button" data-mode="remove" role="radio" aria-checked="false"
      title="click: exclude point (or right-click / Alt-click)">− Remove</button>
    <button type="button" data-mode="box" role="radio" aria-checked="false"
      title="drag, or tap two corners">▭ Box</button>
  </div>
  <button type="button" data-act="undo" title="Undo (U)">Undo</button>
  <button type="button" data-act="clear" title="Clear the current object (Esc)">Clear</button>
  <button type="button" data-act="keep" class="msw-primary" title="Keep this object and start the next (K)">Keep object</button>
  <button type="button" data-act="export" title="Download masks, cut-outs and COCO JSON (E)">Export</button>
  <button type="button" data-act="unkeep" class="msw-local" title="Remove the last kept object">Remove last kept</button>
</div>
<div class="msw-device-row">
  <label class="msw-device" hidden><input type="checkbox" data-act="device"> On this device: the image is
    never uploaded</label>
  <span class="msw-device-note"></span>
</div>
<div class="msw-open msw-local">
  <button type="button" data-act="open" class="msw-primary">Open an image…</button>
  <input type="file" accept="image/*" hidden>
  <span class="msw-examples"></span>
  <span class="msw-drop-hint">or drop / paste an image here</span>
</div>
<div class="msw-info"><span class="msw-tech"></span><span class="msw-live" role="status" aria-live="polite">loading the in-browser decoder…</span></div>
<div class="msw-stage">
  <img class="msw-img" alt="">
  <canvas class="msw-objects" aria-hidden="true"></canvas>
  <canvas class="msw-overlay" tabindex="0" role="application" aria-label="Image to segment"
    aria-describedby="msw-keys"></canvas>
  <div class="msw-spinner" aria-hidden="true"></div>
</div>
<div class="msw-cands" role="group" aria-label="Candidate masks"></div>
<div class="msw-downloads msw-local" aria-live="polite"></div>
<p class="msw-keys" id="msw-keys">Keyboard: focus the image, arrows move the crosshair (Shift: faster),
Enter adds a point, Shift+Enter excludes one, B sets a box corner, 1–3 pick a candidate, U undo,
K keep, Esc clear, E export.</p>`;

const CSS = `
.msw-root{--msw-accent:#1e90ff}
.msw-bar{display:flex;flex-wrap:wrap;gap:6px;align-items:center;margin:4px 0}
.msw-root .msw-bar button,.msw-root .msw-cands button{padding:6px 12px;min-height:36px;border:1px solid #bbb;
  border-radius:6px;background:#f6f6f6;color:#222;cursor:pointer;font-size:14px;font-weight:500;line-height:1.2}
.msw-root .msw-bar button.on{background:var(--msw-accent);color:#fff;border-color:var(--msw-accent)}
.msw-root .msw-bar .msw-primary{background:#f97316;color:#fff;border-color:#f97316}
.msw-root button:focus-visible,.msw-overlay:focus-visible{outline:3px solid var(--msw-accent);outline-offset:2px}
.msw-modes{display:inline-flex;gap:2px}
.msw-info{font-size:.9em;color:#444;margin:2px 0 4px;min-height:1.3em}
.msw-stage{position:relative;display:inline-block;max-width:100%;line-height:0;user-select:none;-webkit-user-select:none}
.msw-stage img{max-width:100%;max-height:max(240px,calc(100vh - 190px));width:auto;height:auto;display:block}
.msw-stage canvas{position:absolute;left:0;top:0;width:100%;height:100%}
.msw-overlay{cursor:crosshair;touch-action:pan-x pan-y pinch-zoom}
.msw-spinner{display:none;position:absolute;right:8px;top:8px;width:22px;height:22px;border-radius:50%;
  border:3px solid #fff8;border-top-color:var(--msw-accent);animation:msw-spin .8s linear infinite}
.msw-stage[aria-busy=true] .msw-spinner{display:block}
@keyframes msw-spin{to{transform:rotate(360deg)}}
.msw-cands{display:flex;flex-wrap:wrap;gap:6px;margin-top:4px;min-height:0}
.msw-root .msw-cands button.on{border-color:var(--msw-accent);box-shadow:0 0 0 2px #1e90ff55}
.msw-keys{font-size:.8em;color:#666;margin:4px 0 0;line-height:1.3}
.msw-root:not(.msw-on-device) .msw-local{display:none}
.msw-device-row{font-size:.9em;margin:2px 0}
.msw-device-note{color:#555;margin-left:6px}
.msw-open{display:flex;flex-wrap:wrap;gap:6px;align-items:center;margin:4px 0}
.msw-root .msw-open button{padding:6px 12px;min-height:36px;border:1px solid #bbb;border-radius:6px;background:#f6f6f6;
  color:#222;cursor:pointer;font-size:14px}
.msw-root .msw-open .msw-primary{background:#f97316;color:#fff;border-color:#f97316}
.msw-drop-hint{color:#666;font-size:.85em}
.msw-root.msw-drag .msw-stage,.msw-root.msw-drag .msw-open{outline:3px dashed var(--msw-accent)}
.msw-downloads a{display:inline-block;margin:2px 10px 2px 0}
@media (pointer: coarse){.msw-keys{display:none}}`;

const WHITE = [255, 255, 255];
const COMMITTED_ALPHA = 150, PREVIEW_ALPHA = 70;   // a hover preview is visibly lighter, unoutlined
const SLOW_HOVER_MS = 600;                         // slower previews are switched off

const emptyPrompts = () => ({ points: [], box: null, corner: null, result: null, history: [] });

class Worker2 {   // a decoder worker with request/response calls
  constructor(onProgress) {
    this.w = new Worker(new URL("./msw_worker.js", import.meta.url), { type: "module" });
    this.seq = 0;
    this.waiting = new Map();
    this.token = null;   // the image whose embedding this worker holds
    this.w.onmessage = (e) => {
      const m = e.data;
      if (m.type === "progress") { if (onProgress) onProgress(m.got, m.total, m.what); return; }
      const p = this.waiting.get(m.id);
      if (!p) return;
      this.waiting.delete(m.id);
      if (m.type === "error") p.reject(new Error(m.error)); else p.resolve(m);
    };
    this.w.onerror = (e) => {
      for (const p of this.waiting.values()) p.reject(new Error(e.message || "decoder worker failed"));
      this.waiting.clear();
    };
  }
  call(msg, transfer) {
    const id = ++this.seq;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.w.postMessage({ ...msg, id }, transfer || []);
    });
  }
  async setEmbedding(token, f16) {
    await this.call({ type: "embedding", token, f16: f16.slice(0) });
    this.token = token;
  }
  terminate() { this.w.terminate(); }
}

// standalone: {configUrl} for a page of its own (the static site): on-device mode only.
export function mount({ element, props, trigger, watch, standalone }) {
  if (element.__mswDispose) element.__mswDispose();
  const root = document.createElement("div");
  root.className = "msw-root";
  root.innerHTML = `<style>${CSS}</style>` + HTML;
  element.replaceChildren(root);
  const $ = (s) => root.querySelector(s);
  const img = $(".msw-img"), objCanvas = $(".msw-objects"), overlay = $(".msw-overlay"), info = $(".msw-info");
  const stage = $(".msw-stage"), techEl = $(".msw-tech"), liveEl = $(".msw-live");
  const ctx = overlay.getContext("2d"), objCtx = objCanvas.getContext("2d");
  const debug = (window.mswDebug = { ready: false, imageReady: false, hoverCount: 0, clicks: [], events: [] });

  const S = {
    cfg: null, decoder: "loading", load: null, model: null, backendLabel: "",
    image: "none", view: null, token: null, f16: null, lastMs: null,
    hover: "off", hoverNote: "", message: "",
  };
  let click = null, hoverW = null;
  let mode = "add", refine = true, maxPoints = 64, keptPending = 0;
  let st = emptyPrompts(), version = 0, preview = null, drag = null, touch = null, kb = null;
  // on-device mode: the kept objects ({low, score, paint}) and the page's own image
  let local = [], localSeq = 0, imgUrl = null, downloadUrls = [];

  // ------------------------------------------------------------------ status line
  const MB = (b) => (b / 1048576).toFixed(1);
  // The line has two parts: what runs here (backend, bytes: not announced) and what is happening
  // (a live region, written only when it changes, so screen readers hear news, not redraws).
  function status() {
    const tech = [], parts = [];
    if (S.decoder === "loading") {
      parts.push(S.load && S.load.total ? `loading decoder ${MB(S.load.got)}/${MB(S.load.total)} MB`
                                        : "loading the in-browser decoder");
    } else if (S.decoder === "ready") {
      const m = S.model;
      tech.push(`${S.backendLabel} · decoder ${MB(m.bytes)} MB ${m.cached ? "(cached)" : "(downloaded)"}` +
                (S.transferred ? ` · ${MB(S.transferred)} MB transferred` : ""));
    } else parts.push(`in-browser decoding unavailable: ${S.error}`);
    if (S.device) {
      if (S.encoder === "loading") {
        parts.push(S.encLoad && S.encLoad.total ? `loading the encoder ${MB(S.encLoad.got)}/${MB(S.encLoad.total)} MB (once; cached afterwards)`
                                                : "loading the encoder (once; cached afterwards)");
      } else if (S.encoder === "ready") tech.push(`encoder ${S.encoderInfo.cached ? "cached" : "downloaded"}`);
      else if (S.encoder === "failed") parts.push(`the encoder could not be loaded (${S.encError}); opening an image tries again`);
    }
    if (S.image === "none") parts.push(S.device ? "open an image (it stays on this device) or pick an example" : "upload an image or pick an example");
    else if (S.image === "encoding") parts.push(`encoding on this device… ${S.encodeClock || ""}`.trim());
    else if (S.image === "uploading") parts.push("uploading and encoding the image on the server");
    else if (S.image === "fetching") parts.push("fetching the image embedding");
    else if (st.points.length || st.box) {
      if (st.queued) parts.push(`${st.points.length + (st.box ? 1 : 0)} prompt(s) queued: decoding once the decoder has loaded`);
      else if (clickBusy) parts.push("decoding…");
      else if (st.result && S.lastMs !== null) {
        parts.push(`decoded in ${S.lastMs.toFixed(0)} ms · predicted IoU ${st.result.iou[st.result.selected].toFixed(3)}`);
      }
    } else if (S.image === "ready" && S.decoder === "ready") {
      parts.push(S.view.local && S.encodeMs ? `encoded here in ${(S.encodeMs / 1000).toFixed(1)} s · ready — click an object`
                                            : "ready — click an object");
    }
    else if (S.image === "ready") parts.push("image ready");
    if (st.corner) parts.push(`${coarse() ? "tap" : "click"} the opposite corner of the box`);
    if (S.hoverNote) parts.push(S.hoverNote);
    if (S.message) parts.push(S.message);
    const techText = tech.length ? tech.join(" · ") + " · " : "", liveText = parts.join(" · ");
    if (techEl.textContent !== techText) techEl.textContent = techText;
    if (liveEl.textContent !== liveText) liveEl.textContent = liveText;
    info.dataset.state = `${S.decoder}/${S.image}`;
    if (S.decoder === "ready") { info.dataset.backend = S.backend; if (S.lastMs !== null) info.dataset.lastMs = S.lastMs.toFixed(2); }
  }
  let sayTimer = 0;
  const say = (msg, ms = 0) => {   // ms > 0: a passing note, cleared after that long
    S.message = msg || ""; clearTimeout(sayTimer);
    if (msg && ms) sayTimer = setTimeout(() => { if (S.message === msg) say(""); }, ms);
    status();
  };

  // ---------------------------------------------------------------- geometry & drawing
  const canDecode = () => S.decoder === "ready" && click.token === S.token && S.image === "ready";
  const to1024 = (x, y) => [x * S.view.input_size[1] / S.view.width, y * S.view.input_size[0] / S.view.height];
  function eventXY(e) {
    const r = overlay.getBoundingClientRect();
    return [Math.min(Math.max((e.clientX - r.left) / r.width, 0), 0.9999) * S.view.width,
            Math.min(Math.max((e.clientY - r.top) / r.height, 0), 0.9999) * S.view.height];
  }
  const colour = () => colorFor(S.cfg.palette, S.view.local ? local.length : (S.view.objects_count || 0) + keptPending);
  const coarse = () => window.matchMedia && window.matchMedia("(pointer: coarse)").matches;

  function putPaint(target, rgba) {
    const im = new ImageData(rgba, overlay.width, overlay.height);
    target.putImageData(im, 0, 0);
  }

  function drawMarkers(points, box, corner) {
    const s = overlay.width / S.view.width;
    const cssPx = overlay.width / Math.max(overlay.getBoundingClientRect().width, 1);
    const r = Math.max((coarse() ? 11 : 6) * cssPx, overlay.width / 160);   // touch: a finger-sized marker
    debug.markerRadiusCss = r / cssPx;
    ctx.lineWidth = Math.max(2, r / 3);
    if (box) { ctx.strokeStyle = "#ffd700"; ctx.strokeRect(box[0] * s, box[1] * s, (box[2] - box[0]) * s, (box[3] - box[1]) * s); }
    if (corner) { ctx.fillStyle = "#ffd700"; ctx.fillRect(corner[0] * s - r / 2, corner[1] * s - r / 2, r, r); }
    for (const [x, y, l] of points) {
      ctx.beginPath(); ctx.arc(x * s, y * s, r, 0, 2 * Math.PI);
      ctx.fillStyle = l === 1 ? "#28c850" : "#e63232"; ctx.fill(); ctx.strokeStyle = "#fff"; ctx.stroke();
      ctx.beginPath(); ctx.moveTo(x * s - r / 2, y * s); ctx.lineTo(x * s + r / 2, y * s);
      if (l === 1) { ctx.moveTo(x * s, y * s - r / 2); ctx.lineTo(x * s, y * s + r / 2); }
      ctx.stroke();
    }
  }

  function drawCrosshair() {
    if (!kb || !overlay.matches(":focus-visible")) return;   // keyboard focus only, not after a click
    const s = overlay.width / S.view.width, x = kb[0] * s, y = kb[1] * s;
    const cssPx = overlay.width / Math.max(overlay.getBoundingClientRect().width, 1), a = 14 * cssPx;
    for (const [c, w] of [["#000", 5 * cssPx], ["#fff", 2 * cssPx]]) {
      ctx.strokeStyle = c; ctx.lineWidth = w;
      ctx.beginPath(); ctx.moveTo(x - a, y); ctx.lineTo(x + a, y); ctx.moveTo(x, y - a); ctx.lineTo(x, y + a); ctx.stroke();
    }
  }

  function redraw() {
    if (!S.view) { ctx.clearRect(0, 0, overlay.width, overlay.height); return; }
    ctx.clearRect(0, 0, overlay.width, overlay.height);
    const res = st.result;
    if (preview) putPaint(ctx, preview.paint);
    else if (res && res.paints[res.selected]) putPaint(ctx, res.paints[res.selected]);
    drawMarkers(preview ? preview.points : st.points, st.box, st.corner);
    if (drag && drag.box) drawMarkers([], drag.box, null);
    drawCrosshair();
    updateCandidates(res);
    status();
  }

  // Candidate buttons are updated in place (rebuilding them would drop a keyboard focus on them).
  function updateCandidates(res) {
    const cands = $(".msw-cands"), n = res && res.low.length > 1 ? res.iou.length : 0;
    while (cands.children.length > n) cands.lastChild.remove();
    while (cands.children.length < n) {
      const b = document.createElement("button"), i = cands.children.length;
      b.type = "button";
      b.onclick = () => pick(i);
      cands.appendChild(b);
    }
    [...cands.children].forEach((b, i) => {
      const text = `mask ${i + 1} · IoU ${res.iou[i].toFixed(3)}`;
      if (b.textContent !== text) b.textContent = text;
      b.setAttribute("aria-pressed", String(i === res.selected));
      b.classList.toggle("on", i === res.selected);
    });
  }

  // ------------------------------------------------------------------------ decoding
  function paintSpec(alpha, edge, all) {
    return { inputSize: S.view.input_size, h: overlay.height, w: overlay.width, color: colour(), alpha, edge, all };
  }
  function request(points, box, prev, paint) {
    const multimask = points.length === 1 && !box;
    const maskInput = refine && prev && !multimask ? prev.low[prev.selected] : null;
    debug.lastRequest = { points: points.length, box: !!box, multimask, hasMaskInput: !!maskInput };
    return {
      type: "decode", token: S.token, multimask, maskInput, paint,
      points: points.map(([x, y, l]) => [...to1024(x, y), l]),
      box: box ? [...to1024(box[0], box[1]), ...to1024(box[2], box[3])] : null,
    };
  }

  let clickBusy = false, clickDirty = false;
  async function runClicks() {   // decodes the latest prompts; clicks made meanwhile coalesce
    clickDirty = true;
    if (clickBusy) return;
    let resent = false;
    clickBusy = true;
    stage.setAttribute("aria-busy", "true");
    try {
      while (clickDirty) {
        clickDirty = false;
        if (!canDecode()) { st.queued = st.points.length > 0 || !!st.box; break; }
        st.queued = false;
        const mine = version, { points, box } = st;
        if (!points.length && !box) { st.result = null; continue; }
        preview = null;
        status();
        const t0 = performance.now();
        debug.events.push("click-start");
        const res = await click.call(request(points, box, st.result, paintSpec(COMMITTED_ALPHA, WHITE, false)));
        debug.events.push("click-done");
        if (res.stale) {   // the worker holds another image's embedding: give it this one, once
          click.token = null;
          if (resent || !S.f16) { say("this image's embedding is gone: open or upload it again"); break; }
          resent = true;
          await click.setEmbedding(S.token, S.f16);
          clickDirty = true;
          continue;
        }
        if (version === mine) st.result = res;   // else undo/clear/another click came meanwhile
        S.lastMs = res.ms;
        debug.clicks.push({ decodeMs: res.ms, totalMs: performance.now() - t0 });
        redraw();
      }
    } catch (err) {
      say(`decoding failed: ${err.message || err}`);
    } finally {
      clickBusy = false;
      stage.setAttribute("aria-busy", "false");
      redraw();
    }
  }

  function commit(points, box) {
    if (!S.view) return;
    if (points.length > maxPoints) { say(`at most ${maxPoints} points per object: keep or clear this one first`, 5000); return; }
    st.history.push({ points: st.points, box: st.box, result: st.result });
    st.points = points; st.box = box; version++;
    preview = null; say("");
    redraw();
    runClicks();
  }

  async function pick(i) {
    const r = st.result;
    if (!r || i >= r.low.length) return;
    r.selected = i;
    redraw();
    if (!r.paints[i]) {   // candidates other than the best are painted when first chosen
      const res = await click.call({ type: "paint", low: r.low[i], paint: paintSpec(COMMITTED_ALPHA, WHITE, false) });
      r.paints[i] = res.rgba;
    }
    if (st.result === r) redraw();
  }

  // Hover previews: their own worker, loaded on the first hover; latest position wins, nothing
  // is sent while a click decodes, and previews stop if this device is too slow for them.
  let hoverWant = null, hoverBusy = false;
  function hoverAt(x, y, label) {
    if (!S.view || S.decoder !== "ready" || S.hover === "slow" || S.hover === "failed") return;
    hoverWant = { x, y, label };
    if (S.hover === "off") startHover();
    pumpHover();
  }
  async function startHover() {
    S.hover = "loading";
    const model = S.cfg.decoder_fast && S.cfg.hover !== "exact" ? S.cfg.decoder_fast : S.cfg.decoder;
    S.hoverNote = `loading hover previews (${MB(model.transfer_bytes || model.bytes)} MB)`;
    status();
    try {
      hoverW = new Worker2(null);
      // One thread: the click worker keeps the other cores, so a preview never slows a click much.
      const r = await hoverW.call({ type: "init", cfg: S.cfg, model, prefer: S.backend, threads: 1 });
      S.hoverModel = r;
      if (S.f16) await hoverW.setEmbedding(S.token, S.f16);
      S.hover = "ready";
      S.hoverNote = "";
      debug.hoverBytes = r.bytes;
    } catch (err) {
      S.hover = "failed";
      S.hoverNote = "hover previews unavailable";
    }
    status();
    pumpHover();
  }
  async function pumpHover() {
    if (hoverBusy || S.hover !== "ready") return;
    hoverBusy = true;
    try {
      while (hoverWant && !clickBusy && !drag) {
        if (hoverW.token !== S.token) { if (!S.f16) break; await hoverW.setEmbedding(S.token, S.f16); }
        const h = hoverWant; hoverWant = null;
        const mine = version, points = [...st.points, [h.x, h.y, h.label]];
        debug.events.push("hover-start");
        const res = await hoverW.call({ ...request(points, st.box, st.result, paintSpec(PREVIEW_ALPHA, null, false)),
                                        delayMs: S.cfg.hoverDelayMs || 0 });
        debug.events.push("hover-done");
        debug.hoverCount++;
        debug.lastHoverMs = res.ms;
        if (res.ms > SLOW_HOVER_MS) {
          S.hover = "slow";
          S.hoverNote = `hover previews off (${(res.ms / 1000).toFixed(1)} s per preview here)`;
          preview = null;
          redraw();
          break;
        }
        if (!res.stale && !hoverWant && !clickBusy && version === mine && !drag && S.pointerIn) {
          preview = { points, paint: res.paints[res.selected] };
          redraw();
        }
      }
    } catch (err) {
      S.hover = "failed"; S.hoverNote = "hover previews unavailable";
    } finally {
      hoverBusy = false;
    }
  }
  function endHover() { hoverWant = null; if (preview) { preview = null; redraw(); } }

  // ----------------------------------------------------------------- pointer & touch
  overlay.addEventListener("contextmenu", (e) => e.preventDefault());
  overlay.addEventListener("pointerdown", (e) => {
    if (!S.view) return;
    if (e.pointerType === "touch") {   // a tap adds a point; a swipe is left to the browser (scroll)
      touch = { id: e.pointerId, x: e.clientX, y: e.clientY, t: performance.now() };
      return;
    }
    overlay.setPointerCapture(e.pointerId);
    const [x, y] = eventXY(e);
    drag = { x, y, moved: false, negative: e.button === 2 || e.altKey || e.shiftKey, box: null };
    endHover();
  });
  overlay.addEventListener("pointermove", (e) => {
    if (!S.view) return;
    if (e.pointerType === "touch") {
      if (touch && Math.hypot(e.clientX - touch.x, e.clientY - touch.y) > 10) touch = null;
      return;
    }
    S.pointerIn = true;
    const [x, y] = eventXY(e);
    if (drag) {
      const far = Math.hypot(x - drag.x, y - drag.y) * overlay.width / S.view.width > 6;
      if (far) {
        drag.moved = true;
        drag.box = [Math.min(x, drag.x), Math.min(y, drag.y), Math.max(x, drag.x), Math.max(y, drag.y)];
        redraw();
      }
      return;
    }
    if (mode !== "box") hoverAt(x, y, mode === "remove" ? 0 : 1);
  });
  overlay.addEventListener("pointercancel", () => { touch = null; drag = null; });
  overlay.addEventListener("pointerup", (e) => {
    const [x, y] = S.view ? eventXY(e) : [0, 0];
    if (e.pointerType === "touch") {
      const t = touch; touch = null;
      if (t && t.id === e.pointerId && performance.now() - t.t < 800) place(x, y, mode === "remove" ? 0 : 1);
      return;
    }
    if (!drag) return;
    const d = drag; drag = null;
    if (d.moved && d.box) { st.corner = null; commit(st.points, d.box); return; }
    place(x, y, d.negative || mode === "remove" ? 0 : 1);
  });
  overlay.addEventListener("pointerleave", () => { S.pointerIn = false; endHover(); });

  function place(x, y, label) {   // a click, tap or Enter at image pixel (x, y)
    if (mode === "box") {
      if (!st.corner) { st.corner = [x, y]; redraw(); return; }
      const c = st.corner; st.corner = null;
      commit(st.points, [Math.min(c[0], x), Math.min(c[1], y), Math.max(c[0], x), Math.max(c[1], y)]);
      return;
    }
    commit([...st.points, [x, y, label]], st.box);
  }

  // ------------------------------------------------------------------------ keyboard
  overlay.addEventListener("focus", () => {
    if (S.view && !kb) kb = [S.view.width / 2, S.view.height / 2];
    redraw();
  });
  overlay.addEventListener("blur", () => { endHover(); redraw(); });
  overlay.addEventListener("keydown", (e) => {
    if (!S.view || e.ctrlKey && e.key !== "z" || e.metaKey || e.altKey) return;
    const step = (e.shiftKey ? 0.1 : 0.02) * Math.max(S.view.width, S.view.height);
    const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
    const k = e.key.length === 1 ? e.key.toLowerCase() : e.key;
    if (moves[e.key]) {
      kb = [Math.min(Math.max(kb[0] + moves[e.key][0], 0), S.view.width - 1),
            Math.min(Math.max(kb[1] + moves[e.key][1], 0), S.view.height - 1)];
      S.pointerIn = true;
      hoverAt(kb[0], kb[1], 1);
      redraw();
    } else if (e.key === "Enter" || e.key === " ") {
      endHover();
      if (mode === "box") place(kb[0], kb[1], 1);
      else commit([...st.points, [kb[0], kb[1], e.shiftKey || mode === "remove" ? 0 : 1]], st.box);
    } else if (k === "-") commit([...st.points, [kb[0], kb[1], 0]], st.box);
    else if (k === "b") {
      if (!st.corner) { st.corner = [...kb]; redraw(); }
      else { const c = st.corner; st.corner = null;
             commit(st.points, [Math.min(c[0], kb[0]), Math.min(c[1], kb[1]), Math.max(c[0], kb[0]), Math.max(c[1], kb[1])]); }
    } else if (k === "u" || k === "Backspace" || (e.ctrlKey && k === "z")) undo();
    else if (k === "k") keep();
    else if (k === "Escape") clear();
    else if (k === "e") exportNow();
    else if (["1", "2", "3"].includes(k)) pick(+k - 1);
    else return;
    e.preventDefault();
  });

  // -------------------------------------------------------------------------- actions
  root.querySelectorAll("[data-mode]").forEach((b) => b.addEventListener("click", () => {
    mode = b.dataset.mode; st.corner = null;
    root.querySelectorAll("[data-mode]").forEach((o) => {
      o.classList.toggle("on", o === b); o.setAttribute("aria-checked", String(o === b));
    });
    redraw();
  }));
  function undo() {
    if (st.corner) st.corner = null;
    else if (st.history.length) { Object.assign(st, st.history.pop()); version++; }
    preview = null; redraw();
  }
  function clear() { st = emptyPrompts(); version++; preview = null; say(""); redraw(); }
  function lowResPayload() {
    const r = st.result, low = r.low[r.selected];
    const half = new Uint16Array(low.length);   // float16 bits, as the server stores masks' logits
    for (let i = 0; i < low.length; i++) half[i] = toHalf(low[i]);
    return { low_res_f16: b64(new Uint8Array(half.buffer)), score: r.iou[r.selected], points: st.points, box: st.box };
  }
  function keep() {
    if (!st.result || clickBusy) { say(clickBusy ? "wait for the mask, then keep it" : "add a point or a box first", 4000); return; }
    const r = st.result, paint = r.paints[r.selected];
    if (paint) drawKept(paint);   // at once; in server mode the server's layer replaces this
    if (S.view.local) local.push({ low: r.low[r.selected], score: r.iou[r.selected] });
    else { trigger("keep", lowResPayload()); keptPending++; }
    st = emptyPrompts(); version++; preview = null;
    say("object kept", 3000);
    redraw();
  }
  function exportNow() {
    if (S.device) { exportLocal(); return; }   // never a server event in on-device mode
    trigger("export", st.result && !clickBusy ? lowResPayload() : {});
    say("preparing downloads (they appear under Downloads)", 5000);
  }
  function drawKept(rgba) {
    const tmp = document.createElement("canvas");
    tmp.width = overlay.width; tmp.height = overlay.height;
    tmp.getContext("2d").putImageData(new ImageData(rgba, tmp.width, tmp.height), 0, 0);
    objCtx.globalAlpha = 0.8; objCtx.drawImage(tmp, 0, 0); objCtx.globalAlpha = 1;
  }
  async function repaintKept() {   // on-device kept objects, painted again from their logits
    objCtx.clearRect(0, 0, objCanvas.width, objCanvas.height);
    const mine = S.token, kept = local;
    for (let i = 0; i < kept.length; i++) {
      const paint = { ...paintSpec(COMMITTED_ALPHA, WHITE, false), color: colorFor(S.cfg.palette, i) };
      const res = await click.call({ type: "paint", low: kept[i].low, paint });
      if (S.token !== mine || local !== kept) return;
      drawKept(res.rgba);
    }
  }
  function unkeep() {
    if (!local.length) { say("no kept object to remove", 3000); return; }
    local = local.slice(0, -1);
    repaintKept();
    say(`${local.length} object(s) kept`, 3000);
  }
  $("[data-act=undo]").onclick = undo;
  $("[data-act=clear]").onclick = clear;
  $("[data-act=keep]").onclick = keep;
  $("[data-act=export]").onclick = exportNow;
  $("[data-act=unkeep]").onclick = unkeep;

  // --------------------------------------------------------------- image & embedding
  async function fetchEmbedding(v) {
    try {
      const r = await fetch(v.embedding);
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      const f16 = await r.arrayBuffer();
      if (S.token !== v.token) return;          // another image came meanwhile
      S.f16 = f16;
      await feedWorkers();
    } catch (err) {
      if (S.token === v.token) say(`could not fetch the image embedding (${err.message || err}); upload it again`);
    }
  }
  async function feedWorkers() {   // give the current embedding to every ready worker
    if (!S.f16) return;
    const token = S.token;
    if (S.decoder === "ready" && click.token !== token) await click.setEmbedding(token, S.f16);
    if (S.hover === "ready" && hoverW.token !== token) await hoverW.setEmbedding(token, S.f16);
    if (S.token !== token) return;
    S.image = "ready";
    debug.imageReady = S.decoder === "ready";
    status();
    if (S.decoder === "ready") runClicks();   // prompts given while loading
  }

  async function show(v) {
    if (S.device) return;   // on-device mode: the server's image stays where it is, untouched
    if (!v || !v.image) {
      S.view = null; S.token = null; S.f16 = null; S.image = "none"; debug.imageReady = false;
      img.removeAttribute("src"); st = emptyPrompts(); redraw(); status(); return;
    }
    const newImage = S.token !== v.token;
    S.view = v;
    refine = debug.refine = v.refine !== false;
    maxPoints = v.max_points || maxPoints;
    keptPending = 0;
    if (newImage) {
      S.token = v.token; S.f16 = null; S.image = "fetching"; debug.imageReady = false;
      st = emptyPrompts(); version++; preview = null; kb = null; S.lastMs = null;
      const embedding = fetchEmbedding(v);   // in parallel with drawing (and with the decoder's download)
      await new Promise((ok) => { img.onload = ok; img.onerror = ok; img.src = v.image; });
      for (const c of [overlay, objCanvas]) { c.width = v.display_width; c.height = v.display_height; }
      objCtx.clearRect(0, 0, objCanvas.width, objCanvas.height);
      revealStage();
      redraw();
      await embedding;
    }
    if (v.objects) {
      const o = new Image();
      await new Promise((ok) => { o.onload = ok; o.onerror = ok; o.src = v.objects; });
      if (S.view === v) { objCtx.clearRect(0, 0, objCanvas.width, objCanvas.height); objCtx.drawImage(o, 0, 0, objCanvas.width, objCanvas.height); }
    } else objCtx.clearRect(0, 0, objCanvas.width, objCanvas.height);
    redraw();
  }

  function revealStage() {   // on a phone the image may sit below the fold: bring it (and its candidates) into view
    const r = root.getBoundingClientRect();
    if (r.top < 0 || r.top > window.innerHeight * 0.5 || $(".msw-cands").getBoundingClientRect().bottom > window.innerHeight) {
      root.scrollIntoView({ behavior: "smooth", block: "start" });
    }
  }

  // Tell the visitor that an upload is on its way (the server answers once it has encoded it).
  const uploadBox = document.querySelector("#msw-upload");
  const onUpload = () => { if (S.image !== "uploading") { S.image = "uploading"; status(); } };
  if (uploadBox) { uploadBox.addEventListener("change", onUpload, true); uploadBox.addEventListener("drop", onUpload, true); }

  // ------------------------------------------------------------- on-device mode
  const deviceBox = $("[data-act=device]"), deviceLabel = $(".msw-device"), fileInput = $(".msw-open input");
  const ESTIMATE_KEY = "msw-encode-ms", DEVICE_KEY = "msw-on-device";
  const store = {   // localStorage may be unavailable (site data blocked): never fatal
    get(k) { try { return localStorage.getItem(k); } catch (e) { return null; } },
    set(k, v) { try { localStorage.setItem(k, v); } catch (e) { /* not remembered */ } },
  };
  function encodeEstimate() {   // this device's last encode, else a rule of thumb per backend
    const last = +store.get(ESTIMATE_KEY);
    if (last) return { s: last / 1000, measured: true };
    // bench/bench_browser.py on a 2-core machine: WASM 2.9 s (1 thread), 1.6 s (2 threads); a GPU < 1 s
    return { s: S.backend === "webgpu" ? 1 : 3 / Math.max(1, Math.min(S.threads || 1, 4)) ** 0.85, measured: false };
  }
  function deviceNote() {
    const e = S.cfg && S.cfg.encoder, note = $(".msw-device-note");
    if (!e || S.decoder !== "ready" || (standalone && S.encoder === "ready")) { note.textContent = ""; return; }
    const est = encodeEstimate(), mb = MB(e.transfer_bytes || e.bytes);
    note.textContent = S.encoder === "ready" ? `about ${est.s.toFixed(1)} s per image here`
      : `one-time download ${mb} MB, then about ${est.s.toFixed(est.s < 10 ? 1 : 0)} s per image here` +
        (S.backend === "webgpu" ? " (WebGPU)" : ` (${S.backendLabel}${est.measured ? "" : ", estimated"})`);
  }
  let encoderReady = null;
  function ensureEncoder() {   // loads the encoder into the click worker (after its decoder)
    if (S.encoder === "ready" || S.encoder === "loading") return encoderReady;
    S.encoder = "loading"; status();
    encoderReady = decoderReady.then(() => {
      if (!S.cfg.encoder) throw new Error("this server has no encoder for on-device mode");
      return click.call({ type: "initEncoder", model: S.cfg.encoder });
    }).then((r) => {
      S.encoder = "ready"; S.encoderInfo = r; debug.encoderReady = true; deviceNote(); status(); return r;
    }, (err) => {
      S.encoder = "failed"; S.encError = String(err.message || err); status(); throw err;
    });
    return encoderReady;
  }

  // The on-device work is kept while the visitor looks at the server's image, and comes back.
  let stash = null;
  function setDevice(on, remember) {   // may run before the decoder has loaded (then the encoder waits)
    on = !!on && S.decoder !== "failed";
    if (remember) store.set(DEVICE_KEY, on ? "1" : "0");
    if (on === !!S.device) return;
    S.device = on; deviceBox.checked = on;
    root.classList.toggle("msw-on-device", on);
    document.documentElement.classList.toggle("msw-device-mode", on && !standalone);   // page CSS hides the upload
    debug.device = on;
    if (on) {
      if (S.cfg) ensureEncoder().catch(() => {});   // else when the config has loaded
      restoreLocal();
    } else {
      stash = S.view && S.view.local ? { view: S.view, token: S.token, f16: S.f16, local, st, encodeMs: S.encodeMs } : null;
      S.token = null;   // back to the server's image (if any): nothing was lost there either
      show(props.value);
    }
    deviceNote(); status();
  }
  function showLocalEmpty() {
    S.view = null; S.token = null; S.f16 = null; S.image = "none"; debug.imageReady = false;
    st = emptyPrompts(); version++; local = []; preview = null;
    img.removeAttribute("src");
    objCtx.clearRect(0, 0, objCanvas.width, objCanvas.height);
    redraw();
  }
  async function restoreLocal() {
    const s = stash;
    stash = null;
    showLocalEmpty();
    if (!s || !imgUrl) return;
    Object.assign(S, { view: s.view, token: s.token, encodeMs: s.encodeMs, image: s.f16 ? "fetching" : "none" });
    local = s.local; st = s.st; version++;
    await new Promise((ok) => { img.onload = ok; img.onerror = ok; img.src = imgUrl; });
    if (S.token !== s.token) return;
    for (const c of [overlay, objCanvas]) { c.width = s.view.display_width; c.height = s.view.display_height; }
    redraw();
    if (!s.f16) { S.image = "encoding"; status(); return; }   // its encode goes on and finishes it
    S.f16 = s.f16;
    await feedWorkers();   // the worker held the server's embedding meanwhile
    repaintKept();
  }
  deviceBox.addEventListener("change", () => setDevice(deviceBox.checked, true));

  async function decodeBitmap(blob) {
    // No colour management and the EXIF orientation applied: the pixels the server's reader gives.
    const opts = { imageOrientation: "from-image", colorSpaceConversion: "none", premultiplyAlpha: "none" };
    try { return await createImageBitmap(blob, opts); } catch (err) {
      if (!(err instanceof TypeError)) throw err;   // an older browser without "from-image" (its default)
      delete opts.imageOrientation;
      return createImageBitmap(blob, opts);
    }
  }

  let opening = 0;
  async function openLocal(blob, name) {
    if (!S.device) return;
    const seq = ++opening, current = () => seq === opening && S.device;
    let token = null;   // this image's, once it is shown; still wanted while stashed (see setDevice)
    const wanted = () => S.token === token || (stash !== null && stash.token === token);
    name = name || "image";
    say("");   // an earlier image's error is old news
    let url = URL.createObjectURL(blob), bitmap = null, tick = 0;
    try {
      // The size from the header first (an <img> learns it without decoding the pixels), so a
      // decompression bomb is refused before it is decoded.
      const probe = new Image();
      const readable = await new Promise((ok) => { probe.onload = () => ok(true); probe.onerror = () => ok(false); probe.src = url; });
      if (!current()) return;
      const limit = (S.cfg && S.cfg.max_pixels) || 100e6, n = probe.naturalWidth * probe.naturalHeight;
      if (!readable || !n) { say(`cannot read ${name} as an image: try a PNG, JPEG or WebP`); return; }
      if (n > limit) {
        say(`${name} is too large: ${probe.naturalWidth}×${probe.naturalHeight} = ${(n / 1e6).toFixed(0)} megapixels ` +
            `(limit ${(limit / 1e6).toFixed(0)})`);
        return;
      }
      try { bitmap = await decodeBitmap(blob); } catch (err) {
        if (current()) say(`cannot decode ${name}: ${err.message || err}`);
        return;
      }
      if (!current()) return;
      const W = bitmap.width, H = bitmap.height, sc = Math.min(1, 1024 / Math.max(W, H));
      token = `local-${++localSeq}`;
      const v = { token, local: true, name, width: W, height: H,
                  display_width: Math.max(1, Math.round(W * sc)), display_height: Math.max(1, Math.round(H * sc)),
                  input_size: preprocessShape(H, W), objects_count: 0 };
      S.token = token; S.view = v; S.f16 = null; S.image = "encoding"; debug.imageReady = false;
      st = emptyPrompts(); version++; preview = null; kb = null; S.lastMs = null; local = []; clearDownloads();
      if (imgUrl) URL.revokeObjectURL(imgUrl);
      imgUrl = url; url = null;
      await new Promise((ok) => { img.onload = ok; img.onerror = ok; img.src = imgUrl; });
      if (S.token === token) {
        for (const c of [overlay, objCanvas]) { c.width = v.display_width; c.height = v.display_height; }
        objCtx.clearRect(0, 0, objCanvas.width, objCanvas.height);
        revealStage(); redraw();
      }
      await ensureEncoder();
      if (!wanted()) return;   // another image came: don't spend seconds on this one
      const t0 = performance.now(), est = encodeEstimate();
      tick = setInterval(() => {
        if (S.token !== token) return;
        S.encodeClock = `${((performance.now() - t0) / 1000).toFixed(0)} s (about ${est.s.toFixed(0)} s here)`; status();
      }, 500);
      const sent = bitmap;
      bitmap = null;   // transferred to the worker, which closes it
      const r = await click.call({ type: "encode", token, bitmap: sent, name, want: debug.encodeWant || {} }, [sent]);
      click.token = r.token;   // the worker holds this embedding now, wanted or not
      debug.lastEncode = { resizeMs: r.resizeMs, encodeMs: r.encodeMs, inputSize: r.inputSize, f32: r.f32, rgb: r.rgb };
      if (stash && stash.token === token) { stash.f16 = r.f16; return; }   // finished while away
      if (S.token !== token) return;
      S.f16 = r.f16; S.encodeMs = r.resizeMs + r.encodeMs;
      store.set(ESTIMATE_KEY, String(Math.round(S.encodeMs)));
      deviceNote();
      await feedWorkers();
    } catch (err) {
      click.token = null;   // whatever the worker holds now, send the embedding again before decoding
      if (stash && stash.token === token) stash = null;   // nothing to come back to
      if (current() && (S.token === token || token === null)) {
        const v = S.view;
        showLocalEmpty();
        say(`could not encode ${v ? v.name : name} on this device: ${err.message || err}`);
      }
    } finally {
      if (bitmap) bitmap.close();
      if (url) URL.revokeObjectURL(url);
      clearInterval(tick);
      if (seq === opening) S.encodeClock = "";
      status();
    }
  }
  fileInput.addEventListener("change", () => { const f = fileInput.files[0]; if (f) openLocal(f, f.name); fileInput.value = ""; });
  $("[data-act=open]").onclick = () => fileInput.click();
  // A file dropped anywhere on the page opens here (the server's upload box is hidden in this
  // mode, and a drop nobody takes would make the browser navigate away from the work). Drops
  // that another control took, or while this widget is hidden (another tab), are left alone.
  const mine = (e) => S.device && !e.defaultPrevented && root.getClientRects().length > 0;
  const onDragOver = (e) => { if (mine(e)) { e.preventDefault(); root.classList.add("msw-drag"); } };
  const onDragLeave = (e) => { if (!e.relatedTarget) root.classList.remove("msw-drag"); };
  const onDrop = (e) => {
    root.classList.remove("msw-drag");
    if (!mine(e)) return;
    e.preventDefault();
    const f = e.dataTransfer && e.dataTransfer.files[0];
    if (f) openLocal(f, f.name);
  };
  document.addEventListener("dragover", onDragOver);
  document.addEventListener("dragleave", onDragLeave);
  document.addEventListener("drop", onDrop);
  const onPaste = (e) => {
    if (!mine(e)) return;
    const f = [...(e.clipboardData ? e.clipboardData.files : [])].find((x) => x.type.startsWith("image/"));
    if (f) { e.preventDefault(); openLocal(f, f.name || "pasted.png"); }
  };
  document.addEventListener("paste", onPaste);

  function examples() {
    const box = $(".msw-examples");
    box.replaceChildren(...(S.cfg.examples || []).map((ex) => {
      const b = document.createElement("button");
      b.type = "button"; b.textContent = ex.label || ex.name; b.title = `example: ${ex.name}`;
      b.onclick = async () => {   // a public example photo: fetching it reveals nothing about the visitor
        try {
          const r = await fetch(ex.url);
          if (!r.ok) throw new Error(`HTTP ${r.status}`);
          openLocal(await r.blob(), ex.name);
        } catch (err) { say(`could not load the example: ${err.message || err}`); }
      };
      return b;
    }));
  }

  function clearDownloads() {
    for (const u of downloadUrls) URL.revokeObjectURL(u);
    downloadUrls = [];
    $(".msw-downloads").replaceChildren();
  }
  async function exportLocal() {
    if (!S.view || !S.view.local || S.image !== "ready") { say("open an image first", 4000); return; }
    const objects = local.map((o) => ({ low: o.low, score: o.score }));
    if (st.result && !clickBusy) objects.push({ low: st.result.low[st.result.selected], score: st.result.iou[st.result.selected] });
    if (!objects.length) { say("nothing to export yet: click an object first", 4000); return; }
    const token = S.token;
    say("building the downloads on this device…");
    try {
      const r = await click.call({ type: "export", token, objects });
      if (S.token !== token) return;   // another image meanwhile: these files are not for it
      clearDownloads();
      const box = $(".msw-downloads"), head = document.createElement("div");
      head.textContent = `Downloads — ${r.summary}`;
      box.appendChild(head);
      for (const f of r.files) {
        const a = document.createElement("a"), u = URL.createObjectURL(f.blob);
        downloadUrls.push(u);
        const kb = f.blob.size / 1024;
        a.href = u; a.download = f.name;
        a.textContent = `${f.name} (${kb < 1 ? `${f.blob.size} bytes` : kb < 1024 ? `${kb.toFixed(0)} kB` : `${MB(f.blob.size)} MB`})`;
        box.appendChild(a);
      }
      box.scrollIntoView({ behavior: "smooth", block: "nearest" });
      debug.downloads = r.files.map((f) => f.name);
      say("downloads ready (built on this device)", 4000);
    } catch (err) {
      if (S.token === token) say(`export failed: ${err.message || err}`);
    }
  }

  // ---------------------------------------------------------------------- test hooks
  debug.state = () => ({ decoder: S.decoder, image: S.image, hover: S.hover, points: st.points.length,
                         queued: !!st.queued, result: !!st.result, backend: S.backend, device: !!S.device,
                         encoder: S.encoder, kept: local.length });
  debug.setDevice = (on) => setDevice(on, false);
  debug.openLocal = async (url, name) => openLocal(await (await fetch(url)).blob(), name);
  debug.downloadBytes = async (name) => {   // tests: one built download, base64
    const a = [...root.querySelectorAll(".msw-downloads a")].find((x) => x.download === name);
    const bytes = new Uint8Array(await (await fetch(a.href)).arrayBuffer());
    return b64(bytes);
  };
  debug.decodeFull = async (points, box) => {
    const r = await click.call({ type: "full", token: S.token, multimask: points.length === 1 && !box, maskInput: null,
      inputSize: S.view.input_size, size: [S.view.height, S.view.width],
      points: points.map(([x, y, l]) => [...to1024(x, y), l]),
      box: box ? [...to1024(box[0], box[1]), ...to1024(box[2], box[3])] : null });
    return { iou: r.iou, masks: r.masks };
  };
  debug.decodeTimed = async (x, y, fast) => {   // one decode (worker round trip included), for benchmarks
    const w = fast ? hoverW : click, t0 = performance.now();
    const r = await w.call(request([[x, y, 1]], null, null, paintSpec(COMMITTED_ALPHA, WHITE, false)));
    return { ms: r.ms, roundTripMs: performance.now() - t0 };
  };
  debug.startHover = () => { if (S.hover === "off") return startHover(); };

  // --------------------------------------------------------------------------- start
  const q = new URLSearchParams(location.search);   // overrides for tests and benchmarks
  const canEncode = typeof OffscreenCanvas !== "undefined" && typeof createImageBitmap === "function" &&
                    typeof CompressionStream === "function";
  let decoderLoaded;
  const decoderReady = new Promise((ok, fail) => { decoderLoaded = { ok, fail }; });
  decoderReady.catch(() => {});
  // Asked for on-device mode (the site, ?msw_device=1, or this browser's remembered choice): it
  // starts now, before anything has loaded, so the server's upload is never offered meanwhile.
  const remembered = store.get(DEVICE_KEY);
  const asked = q.get("msw_device") !== null ? q.get("msw_device") === "1" : remembered === "1";
  if (canEncode && (standalone || asked)) setDevice(true, false);
  else document.documentElement.classList.remove("msw-device-mode");   // set early by the page: not possible here

  function offerDevice(cfg, r) {   // never fatal for decoding: server mode works without it
    if (!cfg.encoder || !canEncode) {
      if (standalone) throw new Error("this browser cannot encode images (it lacks OffscreenCanvas or CompressionStream)");
      if (S.device) { setDevice(false, false); say("on-device mode is not available here", 8000); }
      return;
    }
    examples();
    deviceLabel.hidden = !!standalone;   // offered where it can run; the static site has no other mode
    // On by default only with a hardware GPU (WebGPU is chosen only for one): WASM encodes in seconds.
    if (!S.device && q.get("msw_device") === null && remembered === null && r.hardwareGpu) setDevice(true, false);
    if (S.device) ensureEncoder().catch(() => {});
    deviceNote();
  }
  (async () => {
    try {
      const configUrl = new URL(standalone ? standalone.configUrl : "/msw/config.json", location.href);
      const cfg = await (await fetch(configUrl)).json();
      absoluteUrls(cfg, configUrl);   // workers resolve relative URLs against their own script
      if (q.get("msw_threads")) cfg.threads = +q.get("msw_threads");
      if (q.get("msw_decoder") === "decoder_web" && cfg.decoder_web) cfg.decoder = cfg.decoder_web;
      if (q.get("msw_hover") === "exact") cfg.hover = "exact";
      if (q.get("msw_hover_delay")) cfg.hoverDelayMs = +q.get("msw_hover_delay");   // tests: a slow preview
      S.cfg = cfg;
      maxPoints = cfg.max_points || maxPoints;
      if (!cfg.decoder) throw new Error("the server has no exported decoder");
      click = new Worker2((got, total, what) => {
        if (what === "encoder") S.encLoad = { got, total }; else S.load = { got, total };
        status();
      });
      const r = await click.call({ type: "init", cfg, model: cfg.decoder, prefer: q.get("msw_backend"), threads: cfg.threads });
      S.decoder = "ready"; S.backend = r.backend; S.threads = r.threads; S.model = r; S.transferred = r.transferred;
      S.backendLabel = r.backend === "webgpu" ? "WebGPU" : r.threads > 1 ? `WASM (${r.threads} threads)` : "WASM (1 thread)";
      Object.assign(debug, { ready: true, backend: r.backend, threads: r.threads, modelBytes: r.bytes, cached: r.cached });
      decoderLoaded.ok();
      status();
      await feedWorkers();
      offerDevice(cfg, r);
    } catch (err) {
      S.error = String(err.message || err);
      debug.error = S.error;
      decoderLoaded.fail(err);
      if (S.device && !standalone) setDevice(false, false);   // server mode: the upload comes back
      S.decoder = "failed";
      status();
      if (!standalone) trigger("fallback", { reason: S.error });
    }
  })();
  if (watch) watch("value", () => show(props.value));
  show(props.value);
  element.__mswDispose = () => {
    if (click) click.terminate(); if (hoverW) hoverW.terminate();
    document.removeEventListener("paste", onPaste);
    document.documentElement.classList.remove("msw-device-mode");
    document.removeEventListener("dragover", onDragOver);
    document.removeEventListener("dragleave", onDragLeave);
    document.removeEventListener("drop", onDrop);
    clearDownloads(); if (imgUrl) URL.revokeObjectURL(imgUrl);
  };
}

function absoluteUrls(cfg, base) {
  const abs = (u) => new URL(u, base).href;
  cfg.ort.base = abs(cfg.ort.base);
  for (const k of ["decoder", "decoder_web", "decoder_fast", "encoder"]) if (cfg[k]) cfg[k].url = abs(cfg[k].url);
  for (const ex of cfg.examples || []) ex.url = abs(ex.url);
}

function b64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}
