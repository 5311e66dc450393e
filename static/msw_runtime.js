// Pure helpers shared by the page and the decoder worker (no DOM here): onnxruntime-web loading
// (local copy, else the pinned CDN with subresource integrity), the model cache, float16
// embeddings (and base64), SAM's exact mask up-scaling, mask painting and the object colours.

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

// bundle: {main, glue, wasm} file names (the WASM-only build, or the one with WebGPU).
export async function loadOrt(cfg, bundle, threads) {
  const o = cfg.ort;
  let ort;
  if (o.local) {
    ort = await import(o.base + bundle.main);
    ort.env.wasm.wasmPaths = o.base;
  } else {
    // Dynamic import() cannot carry an integrity attribute: fetch with SRI, import the bytes.
    ort = await import(await blobUrl(o.base + bundle.main, o.sri[bundle.main], "text/javascript"));
    ort.env.wasm.wasmPaths = { mjs: await blobUrl(o.base + bundle.glue, o.sri[bundle.glue], "text/javascript") };
    ort.env.wasm.wasmBinary = await (await fetchChecked(o.base + bundle.wasm, o.sri[bundle.wasm])).arrayBuffer();
  }
  // Threads need SharedArrayBuffer, i.e. a cross-origin isolated page; otherwise one thread.
  const isolated = self.crossOriginIsolated === true;
  const want = threads || Math.min(4, navigator.hardwareConcurrency || 1);
  ort.env.wasm.numThreads = isolated ? want : 1;
  ort.env.wasm.proxy = false;   // we already run in our own worker
  return ort;
}

// -> {bytes, cached}. onProgress(got, total) in uncompressed bytes (the server may gzip).
export async function cachedModel(url, total, onProgress) {
  let cache = null;
  try { cache = await caches.open(MODEL_CACHE); } catch (e) { /* no Cache API (e.g. http) */ }
  if (cache) {
    const hit = await cache.match(url);
    if (hit) return { bytes: new Uint8Array(await hit.arrayBuffer()), cached: true };
  }
  const r = await fetchChecked(url);
  total = total || +r.headers.get("x-uncompressed-length") || +r.headers.get("content-length") || 0;
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

export function toHalf(v) {
  const f = new Float32Array(1), u = new Uint32Array(f.buffer);
  f[0] = v;
  const x = u[0], sign = (x >> 16) & 0x8000, e = ((x >> 23) & 0xff) - 127 + 15, m = x & 0x7fffff;
  if (e <= 0) return sign;                                  // tiny: signed zero
  if (e >= 31) return sign | 0x7c00;                        // overflow: infinity
  const r = (m >> 13) + ((m >> 12) & 1);                    // round half up on the mantissa
  return r === 0x400 ? sign | ((e + 1) << 10) : sign | (e << 10) | r;
}

export function b64(bytes) {   // base64 of a Uint8Array (in pieces: apply() takes a bounded argument list)
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

// SAM's post-processing per axis, the same rule as mobilesam_web/data/upscale.py (a test pins the two):
// bilinear (half-pixel centres) 256 -> 1024, crop to the resized size, bilinear -> out.
// Composed, each output index has <= 4 (index, weight) taps.
function bilinearTaps(outSize, inSize) {
  const scale = inSize / outSize, taps = [];
  for (let i = 0; i < outSize; i++) {
    const src = Math.max((i + 0.5) * scale - 0.5, 0);
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

// A mask as RGBA pixels: filled with `color` at `alpha`, with a `edge` outline (or none).
export function paintMask(mask, h, w, color, alpha, edge) {
  const d = new Uint8ClampedArray(w * h * 4);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    const i = y * w + x;
    if (!mask[i]) continue;
    const o = i * 4;
    const border = edge && (x === 0 || y === 0 || x === w - 1 || y === h - 1 ||
                            !mask[i - 1] || !mask[i + 1] || !mask[i - w] || !mask[i + w]);
    if (border) { d[o] = edge[0]; d[o + 1] = edge[1]; d[o + 2] = edge[2]; d[o + 3] = 255; }
    else { d[o] = color[0]; d[o + 1] = color[1]; d[o + 2] = color[2]; d[o + 3] = alpha; }
  }
  return d;
}

// Python's colorsys.hsv_to_rgb, then uint8 truncation as numpy does (mobilesam_web.data.masks.color_for).
function hsvToRgb(h, s, v) {
  if (s === 0) return [v, v, v];
  let i = Math.trunc(h * 6.0);
  const f = h * 6.0 - i, p = v * (1.0 - s), q = v * (1.0 - s * f), t = v * (1.0 - s * (1.0 - f));
  i = i % 6;
  return [[v, t, p], [q, v, p], [p, v, t], [p, q, v], [t, p, v], [v, p, q]][i];
}

// spec: /msw/config.json's "palette" (from mobilesam_web.data.masks.palette_spec).
export function colorFor(spec, i) {
  if (i < spec.base.length) return spec.base[i];
  return hsvToRgb((i * spec.hue_step) % 1.0, spec.saturation, spec.value).map((c) => Math.trunc(c * 255) & 255);
}

export function rle(mask) {   // row-major run lengths, starting with a run of zeros
  const counts = [];
  let cur = 0, n = 0;
  for (let i = 0; i < mask.length; i++) {
    if (mask[i] === cur) n++;
    else { counts.push(n); cur = mask[i]; n = 1; }
  }
  counts.push(n);
  return counts;
}
