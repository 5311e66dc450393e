// The browser-mode segment canvas. Prompts are decoded locally (msw_runtime.js); the server only
// hears about a mask when the user keeps it (trigger "keep"). If no backend works, the widget
// asks the server to switch back to server-side decoding (trigger "fallback").
import { BrowserDecoder, upscaleMask } from "./msw_runtime.js";

const PALETTE = [[30, 144, 255], [255, 99, 71], [60, 179, 113], [255, 215, 0], [186, 85, 211], [0, 206, 209],
  [255, 140, 0], [199, 21, 133], [154, 205, 50], [70, 130, 180], [244, 164, 96], [123, 104, 238]];
const colorFor = (i) => PALETTE[i % PALETTE.length];

const HTML = `
<div class="msw-bar">
  <div class="msw-modes" role="radiogroup" aria-label="Click adds">
    <button data-mode="add" class="on" title="click: include point">+ Add</button>
    <button data-mode="remove" title="click: exclude point (or right-click / Alt-click)">− Remove</button>
    <button data-mode="box" title="drag, or tap two corners">▭ Box</button>
  </div>
  <button data-act="undo">Undo</button><button data-act="clear">Clear</button>
  <button data-act="keep" class="msw-primary">Keep object</button>
  <span class="msw-info">loading the in-browser decoder…</span>
</div>
<div class="msw-stage"><img class="msw-img" alt=""><canvas class="msw-objects"></canvas><canvas class="msw-overlay"></canvas></div>
<div class="msw-cands"></div>`;

const CSS = `
.msw-bar{display:flex;flex-wrap:wrap;gap:6px;align-items:center;margin:4px 0}
.msw-bar button{padding:4px 10px;border:1px solid #bbb;border-radius:6px;background:#f6f6f6;cursor:pointer;font:inherit}
.msw-bar button.on{background:#1e90ff;color:#fff;border-color:#1e90ff}
.msw-bar .msw-primary{background:#f97316;color:#fff;border-color:#f97316}
.msw-modes{display:inline-flex;gap:2px}
.msw-info{font-size:.85em;color:#555;margin-left:auto}
.msw-stage{position:relative;display:inline-block;max-width:100%;line-height:0;user-select:none}
.msw-stage img{max-width:100%;display:block}
.msw-stage canvas{position:absolute;left:0;top:0;width:100%;height:100%}
.msw-overlay{cursor:crosshair;touch-action:none}
.msw-cands{display:flex;gap:6px;margin-top:4px}
.msw-cands button{padding:3px 8px;border:1px solid #bbb;border-radius:6px;background:#fff;cursor:pointer}
.msw-cands button.on{border-color:#1e90ff;box-shadow:0 0 0 2px #1e90ff55}`;

export function mount({ element, props, trigger, watch }) {
  const root = document.createElement("div");
  root.className = "msw-root";
  root.innerHTML = `<style>${CSS}</style>` + HTML;
  element.replaceChildren(root);
  const $ = (s) => root.querySelector(s);
  const img = $(".msw-img"), objCanvas = $(".msw-objects"), overlay = $(".msw-overlay"), info = $(".msw-info");
  const ctx = overlay.getContext("2d"), objCtx = objCanvas.getContext("2d");

  let decoder = null, view = null, mode = "add", refine = true;
  let st = { points: [], box: null, corner: null, result: null, history: [] };
  let chain = Promise.resolve(), hoverPending = null, hoverBusy = false, drag = null;
  const debug = (window.mswDebug = window.mswDebug || {});
  debug.ready = false;

  const setInfo = (extra) => {
    if (!decoder) { info.textContent = extra || ""; return; }
    const mb = (decoder.modelBytes / 1048576).toFixed(1);
    const hover = decoder.lastHoverMs ? ` · hover ${decoder.lastHoverMs.toFixed(0)} ms` : "";
    info.textContent = `${decoder.label} · decoder ${mb} MB ${decoder.modelCached ? "(cached)" : "(downloaded)"}` +
      ` · last decode ${decoder.lastMs.toFixed(0)} ms${hover}` + (extra ? ` · ${extra}` : "");
    info.dataset.backend = decoder.backend;
    info.dataset.lastMs = decoder.lastMs.toFixed(2);
  };

  const exclusive = (fn) => (chain = chain.then(fn, fn));   // one session.run at a time

  function to1024(x, y) {
    return [x * view.input_size[1] / view.width, y * view.input_size[0] / view.height];
  }
  function eventXY(e) {
    const r = overlay.getBoundingClientRect();
    return [(e.clientX - r.left) / r.width * view.width, (e.clientY - r.top) / r.height * view.height];
  }

  async function decodePrompts(points, box, prev, fast = false) {
    const multimask = points.length === 1 && !box;
    const maskInput = refine && prev && !multimask ? prev.low[prev.selected] : null;
    const pts = points.map(([x, y, l]) => [...to1024(x, y), l]);
    const bx = box ? [...to1024(box[0], box[1]), ...to1024(box[2], box[3])] : null;
    const { low, iou } = await decoder.decode(pts, bx, maskInput, { fast });
    const sl = multimask ? [1, 2, 3] : [0];
    const res = { low: sl.map((i) => low[i]), iou: sl.map((i) => iou[i]) };
    res.selected = res.iou.indexOf(Math.max(...res.iou));
    return res;
  }

  function drawMask(low, color, alpha) {
    const w = overlay.width, h = overlay.height;
    const m = upscaleMask(low, view.input_size, h, w);
    const im = ctx.createImageData(w, h), d = im.data;
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
      const i = y * w + x;
      if (!m[i]) continue;
      const edge = x === 0 || y === 0 || x === w - 1 || y === h - 1 || !m[i - 1] || !m[i + 1] || !m[i - w] || !m[i + w];
      const o = i * 4;
      if (edge) { d[o] = 255; d[o + 1] = 255; d[o + 2] = 255; d[o + 3] = 255; }
      else { d[o] = color[0]; d[o + 1] = color[1]; d[o + 2] = color[2]; d[o + 3] = alpha; }
    }
    ctx.putImageData(im, 0, 0);
  }

  function drawMarkers(points, box, corner) {
    const s = overlay.width / view.width, r = Math.max(5, overlay.width / 110);
    ctx.lineWidth = Math.max(2, r / 2.5);
    if (box) { ctx.strokeStyle = "#ffd700"; ctx.strokeRect(box[0] * s, box[1] * s, (box[2] - box[0]) * s, (box[3] - box[1]) * s); }
    if (corner) { ctx.fillStyle = "#ffd700"; ctx.fillRect(corner[0] * s - r / 2, corner[1] * s - r / 2, r, r); }
    for (const [x, y, l] of points) {
      ctx.beginPath(); ctx.arc(x * s, y * s, r, 0, 2 * Math.PI);
      ctx.fillStyle = l === 1 ? "#28c850" : "#e63232"; ctx.fill(); ctx.strokeStyle = "#fff"; ctx.stroke();
    }
  }

  function redraw(preview) {
    ctx.clearRect(0, 0, overlay.width, overlay.height);
    const color = colorFor(view.objects_count || 0);
    const res = preview ? preview.result : st.result;
    if (res) drawMask(res.low[res.selected], color, preview ? 110 : 140);
    drawMarkers(preview ? preview.points : st.points, st.box, st.corner);
    if (drag) drawMarkers([], drag.box, null);
    const cands = $(".msw-cands");
    cands.replaceChildren();
    if (st.result && st.result.low.length > 1) {
      st.result.iou.forEach((v, i) => {
        const b = document.createElement("button");
        b.textContent = `mask ${i + 1} · IoU ${v.toFixed(3)}`;
        if (i === st.result.selected) b.className = "on";
        b.onclick = () => { st.result.selected = i; redraw(); };
        cands.appendChild(b);
      });
    }
  }

  function commit(points, box) {
    exclusive(async () => {
      st.history.push({ points: st.points, box: st.box, result: st.result });
      st.points = points; st.box = box;
      st.result = points.length || box ? await decodePrompts(points, box, st.result) : null;
      redraw(); setInfo();
    });
  }

  async function pumpHover() {
    if (hoverBusy) return;
    hoverBusy = true;
    while (hoverPending) {
      const p = hoverPending; hoverPending = null;
      await exclusive(async () => {
        const points = [...st.points, p];
        const result = await decodePrompts(points, st.box, st.result, true);
        if (!hoverPending && !drag) { redraw({ points, result }); setInfo(); }
        debug.hoverCount = (debug.hoverCount || 0) + 1;
      });
    }
    hoverBusy = false;
  }

  overlay.addEventListener("contextmenu", (e) => e.preventDefault());
  overlay.addEventListener("pointerdown", (e) => {
    if (!decoder || !decoder.embedding) return;
    overlay.setPointerCapture(e.pointerId);
    const [x, y] = eventXY(e);
    drag = { x, y, moved: false, negative: e.button === 2 || e.altKey || e.shiftKey, box: null };
  });
  overlay.addEventListener("pointermove", (e) => {
    if (!decoder || !decoder.embedding) return;
    const [x, y] = eventXY(e);
    if (drag) {
      const far = Math.hypot(x - drag.x, y - drag.y) * overlay.width / view.width > 6;
      if (far && (mode === "box" || e.pointerType === "mouse")) {
        drag.moved = true;
        drag.box = [Math.min(x, drag.x), Math.min(y, drag.y), Math.max(x, drag.x), Math.max(y, drag.y)];
        redraw();
      }
      return;
    }
    if (e.pointerType === "mouse" && mode !== "box") {
      hoverPending = [x, y, mode === "remove" ? 0 : 1];
      pumpHover();
    }
  });
  overlay.addEventListener("pointerup", (e) => {
    if (!drag) return;
    const d = drag; drag = null;
    const [x, y] = eventXY(e);
    if (d.moved && d.box) { st.corner = null; commit(st.points, d.box); return; }
    if (mode === "box") {
      if (!st.corner) { st.corner = [x, y]; redraw(); return; }
      const c = st.corner; st.corner = null;
      commit(st.points, [Math.min(c[0], x), Math.min(c[1], y), Math.max(c[0], x), Math.max(c[1], y)]);
      return;
    }
    const label = d.negative || mode === "remove" ? 0 : 1;
    commit([...st.points, [x, y, label]], st.box);
  });
  overlay.addEventListener("pointerleave", () => { hoverPending = null; if (!drag) redraw(); });

  root.querySelectorAll("[data-mode]").forEach((b) => b.addEventListener("click", () => {
    mode = b.dataset.mode; st.corner = null;
    root.querySelectorAll("[data-mode]").forEach((o) => o.classList.toggle("on", o === b));
    redraw();
  }));
  $("[data-act=undo]").onclick = () => exclusive(async () => {
    if (st.corner) st.corner = null;
    else if (st.history.length) Object.assign(st, st.history.pop());
    redraw();
  });
  $("[data-act=clear]").onclick = () => exclusive(async () => {
    st = { points: [], box: null, corner: null, result: null, history: [] }; redraw();
  });
  $("[data-act=keep]").onclick = () => exclusive(async () => {
    if (!st.result) { setInfo("add a point or a box first"); return; }
    const low = st.result.low[st.result.selected];
    const half = new Uint16Array(low.length);   // float16 bits, as the server stores masks' logits
    for (let i = 0; i < low.length; i++) half[i] = toHalf(low[i]);
    trigger("keep", { low_res_f16: b64(new Uint8Array(half.buffer)), score: st.result.iou[st.result.selected],
                      points: st.points, box: st.box });
    st = { points: [], box: null, corner: null, result: null, history: [] };
    redraw();
  });

  async function show(v) {
    if (!v || !v.image) { view = null; img.removeAttribute("src"); return; }
    const newImage = !view || view.token !== v.token;
    view = v;
    if (newImage) {
      await new Promise((ok) => { img.onload = ok; img.src = v.image; });
      for (const c of [overlay, objCanvas]) { c.width = v.display_width; c.height = v.display_height; }
      st = { points: [], box: null, corner: null, result: null, history: [] };
      if (decoder) {
        setInfo("fetching image embedding");
        await exclusive(() => decoder.setEmbedding(v.embedding));
        setInfo();
      }
    }
    objCtx.clearRect(0, 0, objCanvas.width, objCanvas.height);
    if (v.objects) {
      const o = new Image();
      await new Promise((ok) => { o.onload = ok; o.src = v.objects; });
      objCtx.drawImage(o, 0, 0, objCanvas.width, objCanvas.height);
    }
    refine = v.refine !== false;
    redraw();
  }

  // Test hooks: decode at the original resolution with SAM's exact post-processing.
  debug.decodeFull = (points, box) => exclusive(async () => {
    const res = await decodePrompts(points, box, null);
    return { iou: res.iou, masks: res.low.map((l) => rle(upscaleMask(l, view.input_size, view.height, view.width))) };
  });

  (async () => {
    try {
      const cfg = await (await fetch("/msw/config.json")).json();
      const q = new URLSearchParams(location.search);   // overrides for tests and benchmarks
      if (q.get("msw_backend")) cfg.preferBackend = q.get("msw_backend");
      if (q.get("msw_threads")) cfg.threads = +q.get("msw_threads");
      if (q.get("msw_decoder") === "small" && cfg.decoder_small) cfg.decoder = cfg.decoder_small;
      if (q.get("msw_hover") === "exact") cfg.hover = "exact";
      if (!cfg.decoder) throw new Error("the server has no exported decoder");
      decoder = await BrowserDecoder.create(cfg, setInfo);
      debug.decoder = decoder;
      debug.backend = decoder.backend;
      await show(props.value);
      setInfo();
      debug.ready = true;
    } catch (e) {
      debug.error = String(e.message || e);
      info.textContent = "in-browser decoding unavailable: " + debug.error;
      trigger("fallback", { reason: debug.error });
    }
  })();
  if (watch) watch("value", () => show(props.value));
}

function toHalf(v) {
  const f = new Float32Array(1), u = new Uint32Array(f.buffer);
  f[0] = v;
  const x = u[0], sign = (x >> 16) & 0x8000, e = ((x >> 23) & 0xff) - 127 + 15, m = x & 0x7fffff;
  if (e <= 0) return sign;                                  // tiny: signed zero
  if (e >= 31) return sign | 0x7c00;                        // overflow: infinity
  const r = (m >> 13) + ((m >> 12) & 1);                    // round half up on the mantissa
  return r === 0x400 ? sign | ((e + 1) << 10) : sign | (e << 10) | r;
}

function b64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

function rle(mask) {   // row-major run lengths, starting with a run of zeros
  const counts = [];
  let cur = 0, n = 0;
  for (let i = 0; i < mask.length; i++) {
    if (mask[i] === cur) n++;
    else { counts.push(n); cur = mask[i]; n = 1; }
  }
  counts.push(n);
  return counts;
}
