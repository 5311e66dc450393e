// The files' bytes, written here (no DOM: it works in a module Web Worker): CRC-32, PNG (zlib
// data from CompressionStream) for masks (1-bit), label maps (8/16-bit) and cut-outs (RGBA), and a
// stored zip. Single-channel PNGs are exact, like the server's (a canvas only writes RGBA).

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
