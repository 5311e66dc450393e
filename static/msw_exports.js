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
// Label maps and masks are written by our own PNG encoder (msw_png.js; zlib data from
// CompressionStream): a canvas only writes RGBA, these are single-channel like the server's, with
// exact values. Cut-outs go through OffscreenCanvas by default (much faster; exact where alpha is
// 255, RGB 0 where it is 0) or the own encoder (`cutoutEncoder: "exact"`: every byte's value as
// the server's). Masks must be the image's size (the server can also resize them: not here).
// The masks' numbers (box, area, RLE) are msw_rle.js's; this module names the files and builds them.
import { bboxXYWH, cocoRle, maskBounds } from "./msw_rle.js";
import { cutoutPng, labelsPng, makeZip, maskPng } from "./msw_png.js";

// (the parts' functions too, so the tests and the worker import one module)
export { cocoRle, encodeRleString, maskBboxXYWH, maskBounds, rleCounts } from "./msw_rle.js";
export { crc32, cutoutPng, encodePng, labelsPng, makeZip, maskPng } from "./msw_png.js";

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
