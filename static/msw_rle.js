// COCO's mask numbers, as the server computes them (mobilesam_web/data/rle.py, masks.py, boxes.py): a
// mask's tight box and area, and its RLE (pycocotools' compressed strings). Pure: no DOM.
// A mask is width*height values, row-major, nonzero = object.

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

export function bboxXYWH(b) {
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
