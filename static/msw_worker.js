// The in-browser decoder, off the page's main thread. The page runs two of these: one for clicks
// (the exact decoder) and, from the first hover on, one for hover previews (the fast decoder), so
// a preview in flight never delays a click. Each worker runs one request at a time, in order.
//
// Messages in:  {type: "init", cfg, model: {url, bytes}, prefer, threads}
//               {type: "embedding", token, f16: ArrayBuffer}   (1x256x64x64 float16)
//               {type: "decode", token, points, box, maskInput, multimask, paint}
//               {type: "full", token, points, box, size: [h, w]}
//               {type: "paint", low, paint}   (one low-res mask -> RGBA at display size; answered
//                 at once, not after the requests before it: it needs no model)
//               On-device mode (the image never leaves the page):
//               {type: "initEncoder", model: {url, bytes}}   (on this worker's backend)
//               {type: "encode", token, bitmap: ImageBitmap, name, want: {f32, rgb, resizeOnly}}:
//                 resize as the server does (PIL's bilinear, byte for byte), encode, keep the
//                 embedding and the image; replies {inputSize, f16 (for the hover worker), resizeMs,
//                 encodeMs} (resizeOnly, for tests: {inputSize, rgb} and nothing encoded or kept)
//               {type: "export", token, objects: [{low, score}]}: downloads built here, at the image's size
// Messages out: {type: "progress", got, total} while the model downloads; replies carry the
//               request's id: {type: "ready"|"embedded"|"decoded"|"full"|"error", ...}.
import { buildExports } from "./msw_exports.js";
import { preprocessShape, resizeRGB } from "./msw_resize.js";
import { cachedModel, halfToFloat, loadOrt, paintMask, rle, toHalf, upscaleMask } from "./msw_runtime.js";

let ort = null, session = null, embedding = null, token = null, backend = null;
let encoder = null, image = null, inputSize = null;   // on-device mode
let chain = Promise.resolve();

self.onmessage = (e) => {
  const m = e.data;
  // Painting needs no model: it runs at once, even while the decoder downloads (the server's
  // masks are painted here then).
  if (m.type === "paint") {
    try { paint(m); } catch (err) { self.postMessage({ type: "error", id: m.id, error: String((err && err.message) || err) }); }
    return;
  }
  chain = chain.then(() => handle(m)).catch((err) =>
    self.postMessage({ type: "error", id: m.id, error: String((err && err.message) || err) }));
};

async function handle(m) {
  if (m.type === "init") return init(m);
  if (m.type === "embedding") {
    embedding = new ort.Tensor("float32", halfToFloat(new Uint16Array(m.f16)), [1, 256, 64, 64]);
    token = m.token;
    return self.postMessage({ type: "embedded", id: m.id, token });
  }
  if (m.type === "decode") return decode(m);
  if (m.type === "full") return full(m);
  if (m.type === "initEncoder") return initEncoder(m);
  if (m.type === "encode") return encode(m);
  if (m.type === "export") return exportFiles(m);
  throw new Error(`unknown request ${m.type}`);
}

function paint(m) {   // one low-res mask -> RGBA at display size (a candidate chosen, a server mask)
  const p = m.paint, rgba = paintMask(upscaleMask(m.low, p.inputSize, p.h, p.w), p.h, p.w, p.color, p.alpha, p.edge);
  self.postMessage({ type: "painted", id: m.id, rgba }, [rgba.buffer]);
}

function isSoftware(adapter) {
  const info = adapter.info || {};
  return adapter.isFallbackAdapter || info.isFallbackAdapter ||
    /swiftshader|llvmpipe|software/i.test(`${info.vendor} ${info.architecture} ${info.description}`);
}

async function backends(prefer, tried) {
  if (prefer) return [prefer];
  const out = [];
  if ("gpu" in navigator) {
    try {
      const adapter = await navigator.gpu.requestAdapter();
      // A software adapter decodes in seconds, WASM in tens of milliseconds: only on request.
      if (!adapter) tried.push("webgpu: no adapter");
      else if (isSoftware(adapter)) tried.push("webgpu: software adapter");
      else out.push("webgpu");
    } catch (err) { tried.push(`webgpu: ${err.message || err}`); }
  } else tried.push("webgpu: not available");
  out.push("wasm");
  return out;
}

function transferred() {   // bytes that came over the network for this worker (0 when cached)
  try {
    return performance.getEntriesByType("resource").reduce((n, r) => n + (r.transferSize || 0), 0);
  } catch (err) { return 0; }
}

async function init({ id, cfg, model, prefer, threads }) {
  const tried = [];
  let eps = await backends(prefer, tried);
  if (!cfg.ort.bundles.webgpu && eps.includes("webgpu")) {   // e.g. a static site built --no-webgpu
    tried.push("webgpu: not in this site's runtime");
    eps = eps.filter((e) => e !== "webgpu");
    if (!eps.length) eps = ["wasm"];
  }
  ort = await loadOrt(cfg, cfg.ort.bundles[eps.includes("webgpu") ? "webgpu" : "wasm"], threads);
  const m = await cachedModel(model.url, model.bytes, (got, total) => self.postMessage({ type: "progress", got, total }));
  for (const ep of eps) {
    try {
      session = await ort.InferenceSession.create(m.bytes, { executionProviders: [ep] });
      // One decode on a zero embedding, so a backend that loads but cannot run is rejected now.
      embedding = new ort.Tensor("float32", new Float32Array(256 * 64 * 64), [1, 256, 64, 64]);
      const check = await run([[512, 512, 1]], null, null);
      embedding = null;
      backend = ep;
      // hardwareGpu: WebGPU chosen on its own merits (a hardware adapter), not forced by ?msw_backend=
      return self.postMessage({ type: "ready", id, backend: ep, threads: ep === "wasm" ? ort.env.wasm.numThreads : 0,
                                hardwareGpu: ep === "webgpu" && !prefer, check: checkSample(check),
                                bytes: m.bytes.length, cached: m.cached, tried, transferred: transferred() });
    } catch (err) {
      tried.push(`${ep}: ${err.message || err}`);
      session = null;
    }
  }
  throw new Error("no onnxruntime-web backend works here (" + tried.join("; ") + ")");
}

// The check decode's outputs, for tests (a slow software GPU is checked on this decode alone):
// its 4 scores and every 4th row and column of its 4 low-res masks (4 x 64 x 64 logits, 64 KB).
function checkSample({ low, iou }) {
  const sample = new Float32Array(4 * 64 * 64);
  for (let k = 0, i = 0; k < 4; k++)
    for (let y = 0; y < 256; y += 4) for (let x = 0; x < 256; x += 4) sample[i++] = low[k * 65536 + y * 256 + x];
  return { iou, low: sample };
}

// points [[x, y, label]] and box in the resized-1024 frame -> 4 low-res masks and their scores
async function run(points, box, maskInput) {
  const coords = [], labels = [];
  for (const [x, y, l] of points) { coords.push(x, y); labels.push(l); }
  if (box) { coords.push(box[0], box[1], box[2], box[3]); labels.push(2, 3); }
  else { coords.push(0, 0); labels.push(-1); }   // SAM's padding point
  const T = ort.Tensor, n = labels.length;
  const feeds = {
    image_embeddings: embedding,
    point_coords: new T("float32", Float32Array.from(coords), [1, n, 2]),
    point_labels: new T("float32", Float32Array.from(labels), [1, n]),
    mask_input: new T("float32", maskInput || new Float32Array(65536), [1, 1, 256, 256]),
    has_mask_input: new T("float32", Float32Array.from([maskInput ? 1 : 0]), [1]),
  };
  const t0 = performance.now();
  const out = await session.run(feeds);
  const low = await out.low_res_masks.getData(), iou = Array.from(await out.iou_predictions.getData());
  return { low, iou, ms: performance.now() - t0 };
}

async function select(m) {
  const r = await run(m.points, m.box, m.maskInput);
  const sl = m.multimask ? [1, 2, 3] : [0];
  const low = sl.map((i) => r.low.slice(i * 65536, (i + 1) * 65536)), iou = sl.map((i) => r.iou[i]);
  return { low, iou, selected: iou.indexOf(Math.max(...iou)), ms: r.ms };
}

// paint: {inputSize, h, w, color, alpha, edge, all}: the masks as RGBA pixels at display size,
// so the page only copies pixels (no per-pixel work on the main thread).
async function decode(m) {
  if (m.token !== token) return self.postMessage({ type: "decoded", id: m.id, stale: true });
  const t0 = performance.now();
  const r = await select(m);
  if (m.delayMs) await new Promise((ok) => setTimeout(ok, m.delayMs));   // tests: stands for a slow backend
  if (m.costMs) {   // tests: a slow or busy device (the time counts as the decode's)
    await new Promise((ok) => setTimeout(ok, m.costMs));
    r.ms += m.costMs;
  }
  const p = m.paint, paints = [];
  r.low.forEach((low, i) => {
    if (!p.all && i !== r.selected) { paints.push(null); return; }
    const mask = upscaleMask(low, p.inputSize, p.h, p.w);
    paints.push(paintMask(mask, p.h, p.w, p.color, p.alpha, p.edge));
  });
  const transfer = [...r.low.map((a) => a.buffer), ...paints.filter(Boolean).map((a) => a.buffer)];
  self.postMessage({ type: "decoded", id: m.id, token, ...r, paints, totalMs: performance.now() - t0 }, transfer);
}

async function full(m) {   // test hook: masks at the image's own size, exact SAM post-processing
  const r = await select(m);
  const masks = r.low.map((low) => rle(upscaleMask(low, m.inputSize, m.size[0], m.size[1])));
  self.postMessage({ type: "full", id: m.id, iou: r.iou, masks });
}

// ------------------------------------------------------------------------- on-device mode
async function initEncoder({ id, model }) {
  if (!encoder) {
    const m = await cachedModel(model.url, model.bytes,
      (got, total) => self.postMessage({ type: "progress", what: "encoder", got, total }));
    let ep = backend;
    try {
      encoder = await ort.InferenceSession.create(m.bytes, { executionProviders: [ep] });
    } catch (err) {   // a GPU that decodes may still fail to compile the encoder: WASM then
      if (ep === "wasm") throw err;
      ep = "wasm";
      encoder = await ort.InferenceSession.create(m.bytes, { executionProviders: [ep] });
    }
    encoder.info = { bytes: m.bytes.length, cached: m.cached, encoderBackend: ep };
  }
  self.postMessage({ type: "encoderReady", id, backend, ...encoder.info, transferred: transferred() });
}

// ImageBitmap -> RGBA bytes (decoded without colour management, as PIL). Transparent pixels are
// put on white, as the server's reader does (within 1 of PIL's alpha_composite: the canvas
// blends premultiplied 8-bit values); opaque images are unchanged.
function pixels(bitmap) {
  const c = new OffscreenCanvas(bitmap.width, bitmap.height);
  const g = c.getContext("2d", { willReadFrequently: true });
  g.fillStyle = "#fff";
  g.fillRect(0, 0, c.width, c.height);
  g.drawImage(bitmap, 0, 0);
  bitmap.close();
  return g.getImageData(0, 0, c.width, c.height).data;
}

async function encode(m) {
  if (!encoder) throw new Error("the encoder is not loaded");
  const t0 = performance.now();
  const width = m.bitmap.width, height = m.bitmap.height, rgba = pixels(m.bitmap);
  const [h, w] = preprocessShape(height, width);
  const rgb = resizeRGB(rgba, width, height, w, h);
  const t1 = performance.now();
  if ((m.want || {}).resizeOnly) {   // tests of the resize alone: the embedding and image held stay
    return self.postMessage({ type: "encoded", id: m.id, token, inputSize: [h, w], rgb: rgb.buffer,
                              resizeMs: t1 - t0 }, [rgb.buffer]);
  }
  const out = await encoder.run({ [encoder.inputNames[0]]: new ort.Tensor("uint8", rgb, [h, w, 3]) });
  const f32 = await out[encoder.outputNames[0]].getData();
  const t2 = performance.now();
  embedding = new ort.Tensor("float32", f32, [1, 256, 64, 64]);
  token = m.token;
  image = { rgba, width, height, name: m.name || "image" };
  inputSize = [h, w];
  const f16 = new Uint16Array(f32.length);
  for (let i = 0; i < f32.length; i++) f16[i] = toHalf(f32[i]);
  const want = m.want || {};
  const reply = { type: "encoded", id: m.id, token, inputSize, width, height, f16: f16.buffer,
                  resizeMs: t1 - t0, encodeMs: t2 - t1 };
  if (want.f32) reply.f32 = f32.slice(0).buffer;
  if (want.rgb) reply.rgb = rgb.buffer;
  self.postMessage(reply, [f16.buffer, ...(want.f32 ? [reply.f32] : []), ...(want.rgb ? [rgb.buffer] : [])]);
}

async function exportFiles(m) {
  if (!image || m.token !== token) throw new Error("the image changed: export again");
  const objects = m.objects.map((o) => ({ mask: upscaleMask(o.low, inputSize, image.height, image.width), score: o.score }));
  const r = await buildExports(image, objects);
  self.postMessage({ type: "exported", id: m.id, files: r.files, summary: r.summary });
}
