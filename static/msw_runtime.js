// In-browser MobileSAM decoding with onnxruntime-web: runtime loading (local copy, else pinned
// CDN with subresource integrity), WebGPU first then WASM, the decoder model (Cache API), the
// float16 image embedding, and SAM's mask post-processing on the client.

const MODEL_CACHE = "mobilesam-web-models-v1";

async function fetchChecked(url, integrity) {
  const r = await fetch(url, integrity ? { integrity, mode: "cors" } : {});
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r;
}

async function blobUrl(url, integrity, type) {
  const r = await fetchChecked(url, integrity);
  return URL.createObjectURL(new Blob([await r.arrayBuffer()], { type }));
}

export async function loadOrt(cfg) {
  const o = cfg.ort;
  const main = "ort.webgpu.min.mjs", glue = "ort-wasm-simd-threaded.asyncify.mjs",
        wasm = "ort-wasm-simd-threaded.asyncify.wasm";
  let ort;
  if (o.local) {
    ort = await import(o.base + main);
    ort.env.wasm.wasmPaths = o.base;
  } else {
    // Dynamic import() cannot carry an integrity attribute: fetch with SRI, import the bytes.
    ort = await import(await blobUrl(o.base + main, o.sri[main], "text/javascript"));
    ort.env.wasm.wasmPaths = { mjs: await blobUrl(o.base + glue, o.sri[glue], "text/javascript") };
    ort.env.wasm.wasmBinary = await (await fetchChecked(o.base + wasm, o.sri[wasm])).arrayBuffer();
  }
  // Threads need SharedArrayBuffer, i.e. a cross-origin isolated page; otherwise one thread.
  const isolated = self.crossOriginIsolated === true;
  const want = cfg.threads || Math.min(4, navigator.hardwareConcurrency || 1);
  ort.env.wasm.numThreads = isolated ? want : 1;
  return ort;
}

async function cachedModel(url, onProgress) {
  let cache = null;
  try { cache = await caches.open(MODEL_CACHE); } catch (e) { /* no Cache API (e.g. http) */ }
  if (cache) {
    const hit = await cache.match(url);
    if (hit) return { bytes: new Uint8Array(await hit.arrayBuffer()), cached: true };
  }
  const r = await fetchChecked(url);
  const total = +r.headers.get("content-length") || 0;
  const reader = r.body.getReader();
  const parts = [];
  let got = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    got += value.length;
    if (onProgress) onProgress(got, total);
  }
  const bytes = new Uint8Array(got);
  let off = 0;
  for (const p of parts) { bytes.set(p, off); off += p.length; }
  if (cache) {
    try { await cache.put(url, new Response(bytes, { headers: { "content-type": "application/octet-stream" } })); }
    catch (e) { /* quota: fine, next visit downloads again */ }
  }
  return { bytes, cached: false };
}

export function halfToFloat(u16) {
  const out = new Float32Array(u16.length);
  for (let i = 0; i < u16.length; i++) {
    const h = u16[i], s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
    out[i] = e === 0 ? s * f * 5.960464477539063e-8 : e === 31 ? (f ? NaN : s * Infinity)
                     : s * (1 + f / 1024) * Math.pow(2, e - 15);
  }
  return out;
}

// SAM's post-processing per axis: bilinear (half-pixel centres) 256 -> 1024, crop to the
// resized size, bilinear -> out. Composed: each output index has <= 4 (index, weight) taps.
function bilinearTaps(outSize, inSize) {
  const scale = inSize / outSize, taps = [];
  for (let i = 0; i < outSize; i++) {
    let src = Math.max((i + 0.5) * scale - 0.5, 0);
    let i0 = Math.floor(src);
    const lam = src - i0;
    const i1 = Math.min(i0 + 1, inSize - 1);
    i0 = Math.min(i0, inSize - 1);
    taps.push([[i0, 1 - lam], [i1, lam]]);
  }
  return taps;
}

function compositeTaps(outSize, cropSize) {
  const up = bilinearTaps(1024, 256), down = bilinearTaps(outSize, cropSize);
  return down.map((pairs) => {
    const acc = new Map();
    for (const [j, w] of pairs) for (const [k, v] of up[j]) acc.set(k, (acc.get(k) || 0) + w * v);
    const idx = [...acc.keys()];
    return { idx: Int32Array.from(idx), w: Float32Array.from(idx.map((k) => acc.get(k))) };
  });
}

const tapCache = new Map();
function taps(outSize, cropSize) {
  const key = `${outSize}/${cropSize}`;
  if (!tapCache.has(key)) tapCache.set(key, compositeTaps(outSize, cropSize));
  return tapCache.get(key);
}

// low: Float32Array(256*256) logits -> Uint8Array(h*w) mask (1 = inside), exact SAM geometry.
export function upscaleMask(low, inputSize, h, w) {
  const rt = taps(h, inputSize[0]), ct = taps(w, inputSize[1]);
  const tmp = new Float32Array(256 * w);           // rows of `low` resampled along x
  for (let r = 0; r < 256; r++) {
    const base = r * 256;
    for (let x = 0; x < w; x++) {
      const t = ct[x];
      let v = 0;
      for (let k = 0; k < t.idx.length; k++) v += t.w[k] * low[base + t.idx[k]];
      tmp[r * w + x] = v;
    }
  }
  const out = new Uint8Array(h * w);
  for (let y = 0; y < h; y++) {
    const t = rt[y];
    for (let x = 0; x < w; x++) {
      let v = 0;
      for (let k = 0; k < t.idx.length; k++) v += t.w[k] * tmp[t.idx[k] * w + x];
      out[y * w + x] = v > 0 ? 1 : 0;
    }
  }
  return out;
}

export class BrowserDecoder {
  static async create(cfg, onStatus) {
    const ort = await loadOrt(cfg);
    const model = await cachedModel(cfg.decoder.url, (got, total) =>
      onStatus && onStatus(`downloading decoder ${(got / 1048576).toFixed(1)}/${(total / 1048576).toFixed(1)} MB`));
    const tried = [];
    const want = cfg.preferBackend ? [cfg.preferBackend] : ["webgpu", "wasm"];
    for (const ep of want) {
      if (ep === "webgpu" && !("gpu" in navigator)) { tried.push("webgpu: not available"); continue; }
      try {
        if (ep === "webgpu") {
          const adapter = await navigator.gpu.requestAdapter();
          if (!adapter) throw new Error("no adapter");
          const info = adapter.info || {};
          const software = adapter.isFallbackAdapter || info.isFallbackAdapter ||
            /swiftshader|llvmpipe|software/i.test(`${info.vendor} ${info.architecture} ${info.description}`);
          // A software adapter decodes in seconds, WASM in tens of milliseconds: only on request.
          if (software && !cfg.preferBackend) throw new Error(`software adapter (${info.architecture || info.vendor})`);
        }
        const session = await ort.InferenceSession.create(model.bytes, { executionProviders: [ep] });
        const d = new BrowserDecoder(ort, session, ep, model);
        await d.selfTest();
        if (cfg.decoder_fast && cfg.hover !== "exact") d.fastReady = d.loadFast(cfg.decoder_fast.url);
        return d;
      } catch (e) {
        tried.push(`${ep}: ${e.message || e}`);
      }
    }
    throw new Error("no onnxruntime-web backend works here (" + tried.join("; ") + ")");
  }

  constructor(ort, session, backend, model) {
    this.ort = ort;
    this.session = session;
    this.backend = backend;
    this.modelBytes = model.bytes.length;
    this.modelCached = model.cached;
    this.threads = backend === "wasm" ? ort.env.wasm.numThreads : 0;
    this.embedding = null;
    this.lastMs = 0;
    this.fastSession = null;   // hover previews (tanh GELU: WASM's erf is slow); clicks stay exact
    this.lastHoverMs = 0;
  }

  async loadFast(url) {
    try {
      const model = await cachedModel(url);
      this.fastSession = await this.ort.InferenceSession.create(model.bytes, { executionProviders: [this.backend] });
      this.fastBytes = model.bytes.length;
    } catch (e) {
      this.fastError = String(e.message || e);   // hover then uses the exact decoder
    }
  }

  get label() {
    if (this.backend === "webgpu") return "WebGPU";
    return this.threads > 1 ? `WASM (${this.threads} threads)` : "WASM (1 thread)";
  }

  async selfTest() {
    // One decode on a zero embedding, so a backend that loads but cannot run is rejected now.
    this.embedding = new this.ort.Tensor("float32", new Float32Array(256 * 64 * 64), [1, 256, 64, 64]);
    await this.decode([[512, 512, 1]], null, null);
    this.embedding = null;
  }

  async setEmbedding(url) {
    const r = await fetchChecked(url);
    const f32 = halfToFloat(new Uint16Array(await r.arrayBuffer()));
    this.embedding = new this.ort.Tensor("float32", f32, [1, 256, 64, 64]);
  }

  // points: [[x, y, label], ...] and box [x0, y0, x1, y1] in the resized-1024 frame;
  // maskInput: Float32Array(65536) or null. -> {low: [4 x Float32Array(65536)], iou: [4]}
  async decode(points, box, maskInput, { fast = false } = {}) {
    const coords = [], labels = [];
    for (const [x, y, l] of points) { coords.push(x, y); labels.push(l); }
    if (box) { coords.push(box[0], box[1], box[2], box[3]); labels.push(2, 3); }
    else { coords.push(0, 0); labels.push(-1); }   // SAM's padding point
    const T = this.ort.Tensor, n = labels.length;
    const feeds = {
      image_embeddings: this.embedding,
      point_coords: new T("float32", Float32Array.from(coords), [1, n, 2]),
      point_labels: new T("float32", Float32Array.from(labels), [1, n]),
      mask_input: new T("float32", maskInput || new Float32Array(65536), [1, 1, 256, 256]),
      has_mask_input: new T("float32", Float32Array.from([maskInput ? 1 : 0]), [1]),
    };
    const session = fast && this.fastSession ? this.fastSession : this.session;
    const t0 = performance.now();
    const out = await session.run(feeds);
    const lowAll = await out.low_res_masks.getData(), iou = Array.from(await out.iou_predictions.getData());
    if (session === this.session) this.lastMs = performance.now() - t0;
    else this.lastHoverMs = performance.now() - t0;
    const low = [0, 1, 2, 3].map((i) => lowAll.slice(i * 65536, (i + 1) * 65536));
    return { low, iou };
  }
}
