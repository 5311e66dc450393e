// On-device downloads: the files the server's `write_exports` (mobilesam_web/ui/exports.py)
// writes, built in the browser so the image never leaves it. A pure ES module (no DOM): it works
// on the page and in a module Web Worker.
//
// - `coco_<stem>.json`   COCO dict as `coco_annotations` (compressed RLE, tight bbox, area, ...),
//                        without the OpenCV polygons (noted in `info`)
// - `labels_<stem>.png`  pixel value i = object i, later objects on top; 8-bit grayscale PNG,
//                        16-bit above 255 objects
// - up to 10 objects:    `01_mask_<stem>.png` (1-bit grayscale, reads back as 0 / 255) and
//                        `01_cutout_<stem>.png` (RGBA cropped to the mask's box), ...
// - more:                `masks_<stem>.zip` (stored) holding `mask001.png`, `cutout001.png`, ...
//
// Label maps and masks are written by this module's own PNG encoder (zlib data from
// CompressionStream): a canvas only writes RGBA, these are single-channel like the server's, with
// exact values. Cut-outs go through OffscreenCanvas by default (much faster; exact where alpha is
// 255, RGB 0 where it is 0) or the own encoder (`cutoutEncoder: "exact"`: every byte's value as
// the server's). Masks must be the image's size (the server can also resize them: not here).

export const STEM_CHARS = 24;
export const SEPARATE_FILES = 10;
export const POLYGON_NOTE =
  "polygons omitted: this file was built in the browser (on-device mode), which does not trace " +
  "OpenCV contours; each annotation's segmentation (COCO compressed RLE) is exact";

// ---------------------------------------------------------------------------------------------
// names

// Python's os.path.splitext(os.path.basename(p))[0] (POSIX rules: leading dots are not an extension)
function splitextStem(p) {
  const base = p.slice(p.lastIndexOf("/") + 1);
  const dot = base.lastIndexOf(".");
  if (dot <= 0) return base;
  for (let i = 0; i < dot; i++) if (base[i] !== ".") return base.slice(0, dot);
  return base;
}

function basename(p) {
  return p.slice(p.lastIndexOf("/") + 1);
}

function stripChars(s, chars, left, right) {
  let a = 0;
  let b = s.length;
  while (left && a < b && chars.includes(s[a])) a++;
  while (right && b > a && chars.includes(s[b - 1])) b--;
  return s.slice(a, b);
}

// = exports.file_stem: the image's name cut to `limit` safe characters ("image" if none are left)
export function fileStem(name, limit = STEM_CHARS) {
  let stem = splitextStem(name || "image").replace(/[^A-Za-z0-9_.-]+/g, "_");
  stem = stripChars(stem, "._", true, true);
  stem = stripChars(stem.slice(0, limit), "._", false, true);
  return stem || "image";
}

const pad = (i, n) => String(i).padStart(n, "0");

// = Export.summary, e.g. "3 objects: COCO JSON, label map, 3 masks + 3 cut-outs"
export function exportSummary(n, cutouts, zipped) {
  const plural = n === 1 ? "" : "s";
  const parts = ["COCO JSON", "label map"];
  if (n) {
    const what = `${n} mask${plural}` + (cutouts ? ` + ${n} cut-out${plural}` : "");
    parts.push(what + (zipped ? " (zip)" : ""));
  }
  return `${n} object${plural}: ` + parts.join(", ");
}

// ---------------------------------------------------------------------------------------------
// masks: box, area, RLE

// A Uint32 view of a byte mask's buffer, to skip empty stretches four pixels at a time.
function wordView(mask) {
  if (!ArrayBuffer.isView(mask) || mask.BYTES_PER_ELEMENT !== 1) return null;
  return new Uint32Array(mask.buffer, 0, mask.buffer.byteLength >> 2);
}

// First nonzero index in mask[s, e), or -1 (`base` = mask.byteOffset; `words` from wordView)
function firstNonzero(mask, words, base, s, e) {
  let i = s;
  if (words) {
    while (i < e && ((base + i) & 3) !== 0) {
      if (mask[i] !== 0) return i;
      i++;
    }
    let wi = (base + i) >> 2;
    const wEnd = (base + e) >> 2;
    while (wi < wEnd && words[wi] === 0) wi++;
    i = Math.max(i, wi * 4 - base); // (i stays when the row ended before an aligned word)
  }
  for (; i < e; i++) if (mask[i] !== 0) return i;
  return -1;
}

// Last nonzero index in mask[s, e), or -1
function lastNonzero(mask, words, base, s, e) {
  let j = e;
  if (words) {
    while (j > s && ((base + j) & 3) !== 0) {
      j--;
      if (mask[j] !== 0) return j;
    }
    let wj = (base + j) >> 2;
    const wStart = (base + s + 3) >> 2;
    while (wj > wStart && words[wj - 1] === 0) wj--;
    j = Math.min(j, wj * 4 - base);
  }
  while (j > s) {
    j--;
    if (mask[j] !== 0) return j;
  }
  return -1;
}

// Inclusive box {x0, y0, x1, y1, area} of the nonzero pixels, or null when the mask is empty.
export function maskBounds(mask, height, width) {
  const words = wordView(mask);
  const base = words ? mask.byteOffset : 0;
  let x0 = width;
  let x1 = -1;
  let y0 = -1;
  let y1 = -1;
  let area = 0;
  for (let y = 0, row = 0; y < height; y++, row += width) {
    const first = firstNonzero(mask, words, base, row, row + width);
    if (first < 0) continue;
    const last = lastNonzero(mask, words, base, first, row + width);
    for (let i = first; i <= last; i++) if (mask[i] !== 0) area++;
    if (y0 < 0) y0 = y;
    y1 = y;
    if (first - row < x0) x0 = first - row;
    if (last - row > x1) x1 = last - row;
  }
  return y0 < 0 ? null : { x0, y0, x1, y1, area };
}

function bboxXYWH(b) {
  return b ? [b.x0, b.y0, b.x1 - b.x0 + 1, b.y1 - b.y0 + 1] : [0, 0, 0, 0];
}

// = boxes.mask_bbox_xywh: tight COCO [x, y, w, h] (w = last column - first column + 1), [0, 0, 0, 0] if empty
export function maskBboxXYWH(mask, height, width) {
  return bboxXYWH(maskBounds(mask, height, width));
}

// = masks.rle_counts: uncompressed COCO RLE counts (column-major runs, zeros first), scanning
// only the mask's box `b` (maskBounds; everything outside it is zero).
export function rleCounts(mask, height, width, b = maskBounds(mask, height, width)) {
  const total = height * width;
  if (!b) return [total];
  const { x0, y0, x1, y1 } = b;
  const counts = [];
  let cur = 0;
  let start = 0; // where the current run began, in column-major order
  const fullHeight = y0 === 0 && y1 === height - 1;
  for (let x = x0; x <= x1; x++) {
    const base = x * height;
    for (let y = y0, i = y0 * width + x; y <= y1; y++, i += width) {
      const v = mask[i] !== 0 ? 1 : 0;
      if (v !== cur) {
        const p = base + y;
        counts.push(p - start);
        start = p;
        cur = v;
      }
    }
    if (cur === 1) {
      // the next pixel in column-major order: inside the box only when the box spans the full
      // height and this is not its last column; otherwise a zero, where a run of zeros starts
      const p = base + y1 + 1;
      if (!(fullHeight && x < x1) && p < total) {
        counts.push(p - start);
        start = p;
        cur = 0;
      }
    }
  }
  counts.push(total - start);
  return counts;
}

// = masks.encode_rle_string (pycocotools' rleToString)
export function encodeRleString(counts) {
  let s = "";
  for (let i = 0; i < counts.length; i++) {
    let x = counts[i];
    if (i > 2) x -= counts[i - 2];
    let more = true;
    while (more) {
      let c = x & 0x1f;
      x >>= 5; // arithmetic shift, as Python's on negative numbers
      more = c & 0x10 ? x !== -1 : x !== 0;
      if (more) c |= 0x20;
      s += String.fromCharCode(c + 48);
    }
  }
  return s;
}

// pycocotools' compressed RLE {size: [h, w], counts: string} (as masks.mask_to_coco_rle)
export function cocoRle(mask, height, width, bounds) {
  const b = bounds === undefined ? maskBounds(mask, height, width) : bounds;
  return { size: [height, width], counts: encodeRleString(rleCounts(mask, height, width, b)) };
}

// ---------------------------------------------------------------------------------------------
// CRC-32, zlib, PNG, zip

const CRC_TABLES = (() => {
  // slicing-by-4 tables
  const t = new Uint32Array(4 * 256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  for (let n = 0; n < 256; n++) {
    let c = t[n];
    for (let k = 1; k < 4; k++) {
      c = t[c & 0xff] ^ (c >>> 8);
      t[k * 256 + n] = c;
    }
  }
  return t;
})();

// CRC-32 (zip / PNG) of `bytes`, continuing from `crc` (the CRC of what came before)
export function crc32(bytes, crc = 0) {
  const t = CRC_TABLES;
  let c = ~crc;
  let i = 0;
  const n = bytes.length;
  for (const end4 = n - (n % 4); i < end4; i += 4) {
    c ^= bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16) | (bytes[i + 3] << 24);
    c = t[768 + (c & 0xff)] ^ t[512 + ((c >>> 8) & 0xff)] ^ t[256 + ((c >>> 16) & 0xff)] ^ t[c >>> 24];
  }
  for (; i < n; i++) c = t[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

// zlib stream (RFC 1950, as PNG's IDAT holds) of `bytes`
async function zlibDeflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

const PNG_SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

function pngChunk(type, data) {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

// A PNG from its filtered scanlines (each row: filter byte, then the row's bytes).
// colorType 0 = grayscale (bitDepth 1, 8 or 16), 6 = RGBA (bitDepth 8).
export async function encodePng(scanlines, width, height, bitDepth, colorType) {
  const ihdr = new Uint8Array(13);
  const view = new DataView(ihdr.buffer);
  view.setUint32(0, width);
  view.setUint32(4, height);
  ihdr[8] = bitDepth;
  ihdr[9] = colorType;
  const parts = [
    new Uint8Array(PNG_SIGNATURE),
    pngChunk("IHDR", ihdr),
    pngChunk("IDAT", await zlibDeflate(scanlines)),
    pngChunk("IEND", new Uint8Array(0)),
  ];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

// 1-bit grayscale PNG of a mask (reads back as 0 / 255, like masks.mask_png); only the rows of
// its box `b` are written, the rest stay zero.
export function maskPng(mask, height, width, b) {
  const stride = (width + 7) >> 3;
  const lines = new Uint8Array((stride + 1) * height); // filter 0 (None) on every row
  if (b) {
    for (let y = b.y0; y <= b.y1; y++) {
      const row = y * width;
      const o = y * (stride + 1) + 1;
      for (let x = b.x0; x <= b.x1; x++) {
        if (mask[row + x] !== 0) lines[o + (x >> 3)] |= 0x80 >> (x & 7);
      }
    }
  }
  return encodePng(lines, width, height, 1, 0);
}

// The cut-out's pixels: the image cropped to the mask's box `b` (the whole image for an empty
// mask, as masks.cutout_png), alpha 255 inside the mask and 0 outside; rows `stride` bytes apart
// from byte `offset` (room for PNG filter bytes).
function cutoutPixels(rgba, mask, width, height, b, out, offset, stride) {
  const x0 = b ? b.x0 : 0;
  const y0 = b ? b.y0 : 0;
  const cw = b ? b.x1 - b.x0 + 1 : width;
  const ch = b ? b.y1 - b.y0 + 1 : height;
  for (let r = 0; r < ch; r++) {
    const src = ((y0 + r) * width + x0) * 4;
    const o = offset + r * stride;
    out.set(rgba.subarray(src, src + cw * 4), o);
    const m = (y0 + r) * width + x0;
    for (let x = 0, a = o + 3; x < cw; x++, a += 4) out[a] = mask[m + x] !== 0 ? 255 : 0;
  }
  return [cw, ch];
}

function cutoutSize(b, width, height) {
  return b ? [b.x1 - b.x0 + 1, b.y1 - b.y0 + 1] : [width, height];
}

// RGBA PNG of the mask's pixels, cropped to its box (as masks.cutout_png); two encoders:
// - "exact": this module's PNG writer; every pixel as the server writes it, the RGB under
//   alpha 0 included. Rows use PNG's "Up" filter (photos compress far better than unfiltered).
// - "canvas": OffscreenCanvas.convertToBlob, about 5x faster (Chromium's zlib settings; encodes
//   run in parallel); pixels with alpha 255 are exact, but the canvas premultiplies alpha, so the
//   RGB under alpha 0 comes back as 0 (the server keeps the image's RGB there).
export async function cutoutPng(rgba, mask, height, width, b, encoder = "exact") {
  const [cw, ch] = cutoutSize(b, width, height);
  if (encoder === "canvas") {
    const px = new Uint8ClampedArray(cw * ch * 4);
    cutoutPixels(rgba, mask, width, height, b, px, 0, cw * 4);
    const canvas = new OffscreenCanvas(cw, ch);
    canvas.getContext("2d").putImageData(new ImageData(px, cw, ch), 0, 0);
    const blob = await canvas.convertToBlob({ type: "image/png" });
    return new Uint8Array(await blob.arrayBuffer());
  }
  if (encoder !== "exact") throw new Error(`unknown cut-out encoder ${encoder}`);
  const stride = cw * 4;
  const lines = new Uint8Array((stride + 1) * ch);
  cutoutPixels(rgba, mask, width, height, b, lines, 1, stride + 1);
  // "Up" (filter 2): each byte minus the one above it, bottom to top so each row still sees
  // the raw row above (the first row: minus 0)
  for (let r = ch - 1; r >= 0; r--) {
    const o = r * (stride + 1);
    lines[o] = 2;
    if (r === 0) break;
    const a = o - stride;
    for (let k = 1; k <= stride; k++) lines[o + k] = (lines[o + k] - lines[a + k - 1]) & 0xff;
  }
  return encodePng(lines, cw, ch, 8, 6);
}

// Label map PNG: pixel value i = object i (1-based), later objects on top (as write_exports);
// 8-bit grayscale, 16-bit (big-endian) above 255 objects.
export function labelsPng(masks, bounds, height, width) {
  const wide = masks.length > 255;
  const bpp = wide ? 2 : 1;
  const stride = width * bpp + 1;
  const lines = new Uint8Array(stride * height); // filter 0 (None) on every row
  masks.forEach((mask, k) => {
    const b = bounds[k];
    if (!b) return;
    const i = k + 1;
    const hi = i >> 8;
    const lo = i & 0xff;
    for (let y = b.y0; y <= b.y1; y++) {
      const row = y * width;
      const o = y * stride + 1;
      for (let x = b.x0; x <= b.x1; x++) {
        if (mask[row + x] === 0) continue;
        if (wide) {
          lines[o + 2 * x] = hi;
          lines[o + 2 * x + 1] = lo;
        } else {
          lines[o + x] = lo;
        }
      }
    }
  });
  return encodePng(lines, width, height, wide ? 16 : 8, 0);
}

function dosDateTime(d) {
  const time = (d.getHours() << 11) | (d.getMinutes() << 5) | (d.getSeconds() >> 1);
  const date = ((Math.max(d.getFullYear(), 1980) - 1980) << 9) | ((d.getMonth() + 1) << 5) | d.getDate();
  return [time, date];
}

// [{name, bytes}] -> a stored (uncompressed) zip, with CRC-32s (as Python's ZIP_STORED zipfile).
// Names are ASCII here; UTF-8 names get the language-encoding flag. No zip64: under 4 GiB.
export function makeZip(files, when = new Date()) {
  const [time, date] = dosDateTime(when);
  const enc = new TextEncoder();
  const entries = files.map((f) => {
    const name = enc.encode(f.name);
    const utf8 = /[^\x00-\x7f]/.test(f.name) ? 0x0800 : 0;
    return { name, utf8, bytes: f.bytes, crc: crc32(f.bytes) };
  });
  let size = 22;
  for (const e of entries) size += 30 + 46 + 2 * e.name.length + e.bytes.length;
  if (size > 0xffffffff || entries.length > 0xffff) throw new Error("zip too large (no zip64 here)");
  const out = new Uint8Array(size);
  const v = new DataView(out.buffer);
  let o = 0;
  for (const e of entries) {
    e.offset = o;
    v.setUint32(o, 0x04034b50, true);
    v.setUint16(o + 4, 20, true); // version needed
    v.setUint16(o + 6, e.utf8, true); // flags
    v.setUint16(o + 8, 0, true); // stored
    v.setUint16(o + 10, time, true);
    v.setUint16(o + 12, date, true);
    v.setUint32(o + 14, e.crc, true);
    v.setUint32(o + 18, e.bytes.length, true);
    v.setUint32(o + 22, e.bytes.length, true);
    v.setUint16(o + 26, e.name.length, true);
    v.setUint16(o + 28, 0, true);
    out.set(e.name, o + 30);
    out.set(e.bytes, o + 30 + e.name.length);
    o += 30 + e.name.length + e.bytes.length;
  }
  const cd = o;
  for (const e of entries) {
    v.setUint32(o, 0x02014b50, true);
    v.setUint16(o + 4, 20, true); // made by (MS-DOS / FAT attributes), version 2.0
    v.setUint16(o + 6, 20, true);
    v.setUint16(o + 8, e.utf8, true);
    v.setUint16(o + 10, 0, true);
    v.setUint16(o + 12, time, true);
    v.setUint16(o + 14, date, true);
    v.setUint32(o + 16, e.crc, true);
    v.setUint32(o + 20, e.bytes.length, true);
    v.setUint32(o + 24, e.bytes.length, true);
    v.setUint16(o + 28, e.name.length, true);
    // extra, comment, disk, internal attributes, external attributes: 0
    v.setUint32(o + 42, e.offset, true);
    out.set(e.name, o + 46);
    o += 46 + e.name.length;
  }
  v.setUint32(o, 0x06054b50, true);
  v.setUint16(o + 8, entries.length, true);
  v.setUint16(o + 10, entries.length, true);
  v.setUint32(o + 12, o - cd, true);
  v.setUint32(o + 16, cd, true);
  return out;
}

// ---------------------------------------------------------------------------------------------
// the export

// fn(0) ... fn(n - 1), at most `limit` at a time; results in order
async function mapLimit(n, limit, fn) {
  const out = new Array(n);
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const k = next++;
      out[k] = await fn(k);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, n) }, worker));
  return out;
}

export const DEFAULT_CUTOUT_ENCODER = typeof OffscreenCanvas === "function" ? "canvas" : "exact";

// image: {rgba (width*height*4), width, height, name}; objects: [{mask (width*height, nonzero =
// object, row-major), score}]; options: {cutouts = true, separateFiles = 10, cutoutEncoder =
// "canvas" where there is an OffscreenCanvas, else "exact" (see cutoutPng)}.
// -> {files: [{name, blob}], summary}: the server's files, names and order (write_exports).
export async function buildExports(image, objects, options = {}) {
  const { cutouts = true, separateFiles = SEPARATE_FILES, cutoutEncoder = DEFAULT_CUTOUT_ENCODER } = options;
  const { rgba, width, height } = image;
  if (!(Number.isInteger(width) && Number.isInteger(height) && width > 0 && height > 0)) {
    throw new Error(`bad image size ${width}x${height}`);
  }
  if (cutouts && (!rgba || rgba.length !== width * height * 4)) {
    throw new Error(`image.rgba must hold width*height*4 = ${width * height * 4} bytes`);
  }
  objects.forEach((o, k) => {
    if (!o.mask || o.mask.length !== width * height) {
      throw new Error(`object ${k + 1}: mask must hold width*height = ${width * height} values`);
    }
  });
  const stem = fileStem(image.name);
  const files = [];
  const add = (name, bytes, type) => files.push({ name, blob: new Blob([bytes], { type }) });
  // typed arrays as they are (nonzero = object); plain arrays (of booleans, say) as 0 / 1 bytes
  const asBytes = (m) => (ArrayBuffer.isView(m) ? m : Uint8Array.from(m, (v) => (v ? 1 : 0)));
  const masks = objects.map((o) => asBytes(o.mask));
  const bounds = masks.map((m) => maskBounds(m, height, width));

  const coco = {
    info: { description: "MobileSAM on-device export", note: POLYGON_NOTE },
    images: [{ id: 1, file_name: basename(image.name || "image.png"), height, width }],
    categories: [{ id: 1, name: "object" }],
    annotations: objects.map((o, k) => ({
      id: k + 1,
      image_id: 1,
      category_id: 1,
      segmentation: cocoRle(masks[k], height, width, bounds[k]),
      area: bounds[k] ? bounds[k].area : 0,
      bbox: bboxXYWH(bounds[k]),
      iscrowd: 0,
      predicted_iou: Number(o.score),
    })),
  };
  add(`coco_${stem}.json`, JSON.stringify(coco), "application/json");
  const n = masks.length;
  const zipped = n > separateFiles;
  const summary = exportSummary(n, cutouts, zipped);
  if (!n) return { files, summary };
  add(`labels_${stem}.png`, await labelsPng(masks, bounds, height, width), "image/png");
  // canvas encodes run off this thread: a few at once (each holds a copy of its crop)
  const cuts = cutouts
    ? mapLimit(n, cutoutEncoder === "canvas" ? 3 : 1, (k) =>
        cutoutPng(rgba, masks[k], height, width, bounds[k], cutoutEncoder),
      )
    : null;
  cuts?.catch(() => {}); // (awaited below: no "unhandled rejection" meanwhile)
  const maskPngs = [];
  for (let k = 0; k < n; k++) maskPngs.push(await maskPng(masks[k], height, width, bounds[k]));
  const cutPngs = cuts ? await cuts : [];
  const members = [];
  for (let k = 0; k < n; k++) {
    const i = k + 1;
    if (!zipped) {
      add(`${pad(i, 2)}_mask_${stem}.png`, maskPngs[k], "image/png");
      if (cutouts) add(`${pad(i, 2)}_cutout_${stem}.png`, cutPngs[k], "image/png");
    } else {
      members.push({ name: `mask${pad(i, 3)}.png`, bytes: maskPngs[k] });
      if (cutouts) members.push({ name: `cutout${pad(i, 3)}.png`, bytes: cutPngs[k] });
    }
  }
  if (zipped) add(`masks_${stem}.zip`, makeZip(members), "application/zip");
  return { files, summary };
}
