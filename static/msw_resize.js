// SAM's image pre-processing resize, reproduced byte for byte in plain JS (no DOM: works in a
// module Web Worker).
//
// ResizeLongestSide.apply_image (mobilesam_web/engine/transforms.py) scales the image so that its long
// side is 1024 with Pillow's Image.resize(..., Image.BILINEAR) on the uint8 RGB image. The
// encoder's embedding depends on these exact bytes: torch's or ONNX's bilinear interpolation
// differs from Pillow on ~500k values of SAM's parity fixture. This module re-implements the
// algorithm of Pillow 12.3's libImaging/Resample.c (8 bits per channel):
//   * a separable convolution, horizontal pass first into an intermediate uint8 image holding
//     only the source rows the vertical pass reads, then the vertical pass; a pass whose size
//     does not change is skipped (Image.resize, since 12.2, runs the vertical pass first for
//     images taller than 100x their width when the height shrinks);
//   * a triangle filter of support 1 widened by max(1, in / out) (antialiasing when shrinking);
//     per output pixel, coefficients computed in double and normalised to sum 1, then turned
//     into fixed point with 22 fraction bits (rounded half away from zero);
//   * sums start at 1 << 21 (rounding), are shifted right by 22 and clipped to 0..255.
// The integer sums stay below 2^31 (coefficients are >= 0 and sum to ~2^22), so JS numbers,
// Int32Array accumulators and `>>` give exactly Pillow's int arithmetic.

const PRECISION_BITS = 22;
const ONE = 1 << PRECISION_BITS;
const HALF = 1 << (PRECISION_BITS - 1);

/** [newH, newW] with the long side scaled to `longSide`; same as transforms.get_preprocess_shape. */
export function preprocessShape(h, w, longSide = 1024) {
  const scale = (longSide * 1.0) / Math.max(h, w);
  return [Math.floor(h * scale + 0.5), Math.floor(w * scale + 0.5)];
}

// Pillow's precompute_coeffs + normalize_coeffs_8bpc for box (0, inSize) -> outSize.
// bounds[2i] is the first input index of output i, bounds[2i + 1] the number of taps;
// kk[i * ksize + t] the fixed-point weight of tap t.
function coefficients(inSize, outSize) {
  const scale = inSize / outSize;
  const filterscale = scale < 1.0 ? 1.0 : scale;
  const support = 1.0 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const inv = 1.0 / filterscale;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const w = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const xmin = Math.max(0, Math.trunc(center - support + 0.5));
    const n = Math.min(inSize, Math.trunc(center + support + 0.5)) - xmin;
    let ww = 0.0;
    for (let x = 0; x < n; x++) {
      const t = Math.abs((x + xmin - center + 0.5) * inv);
      w[x] = t < 1.0 ? 1.0 - t : 0.0;
      ww += w[x];
    }
    for (let x = 0; x < n; x++) {
      const k = ww !== 0.0 ? w[x] / ww : w[x];
      kk[xx * ksize + x] = Math.trunc(0.5 + k * ONE); // k >= 0: round half up
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = n;
  }
  return { ksize, bounds, kk };
}

// Rows y0 .. y0 + rows - 1 of `src` (srcW pixels of `ch` bytes) -> RGB rows of outW pixels.
function horizontal(src, ch, srcW, y0, rows, outW) {
  const { ksize, bounds, kk } = coefficients(srcW, outW);
  const out = new Uint8ClampedArray(rows * outW * 3); // clamps to 0..255 like clip8
  let o = 0;
  for (let yy = 0; yy < rows; yy++) {
    const row = (y0 + yy) * srcW * ch;
    for (let xx = 0; xx < outW; xx++) {
      const n = bounds[xx * 2 + 1];
      const k0 = xx * ksize;
      let p = row + bounds[xx * 2] * ch;
      let r = HALF;
      let g = HALF;
      let b = HALF;
      for (let x = 0; x < n; x++, p += ch) {
        const k = kk[k0 + x];
        r += src[p] * k;
        g += src[p + 1] * k;
        b += src[p + 2] * k;
      }
      out[o++] = r >> PRECISION_BITS;
      out[o++] = g >> PRECISION_BITS;
      out[o++] = b >> PRECISION_BITS;
    }
  }
  return out;
}

// `src` (w pixels of `ch` bytes a row; its row 0 is source row y0) -> RGB image of outH rows,
// using vertical coefficients `c` computed for the full source height.
function vertical(src, ch, w, y0, c, outH) {
  const { ksize, bounds, kk } = c;
  const out = new Uint8ClampedArray(outH * w * 3);
  const acc = new Int32Array(w * 3);
  for (let yy = 0; yy < outH; yy++) {
    acc.fill(HALF);
    const n = bounds[yy * 2 + 1];
    for (let y = 0; y < n; y++) {
      const k = kk[yy * ksize + y];
      let p = (bounds[yy * 2] - y0 + y) * w * ch;
      for (let i = 0; i < acc.length; i += 3, p += ch) {
        acc[i] += src[p] * k;
        acc[i + 1] += src[p + 1] * k;
        acc[i + 2] += src[p + 2] * k;
      }
    }
    const o = yy * w * 3;
    for (let i = 0; i < acc.length; i++) out[o + i] = acc[i] >> PRECISION_BITS;
  }
  return out;
}

/**
 * RGBA bytes (width * height * 4, alpha ignored) -> Uint8Array of outH * outW * 3 RGB bytes,
 * equal to np.array(Image.fromarray(rgb).resize((outW, outH), Image.BILINEAR)) in Pillow 12.3.
 * Same size: the RGB bytes unchanged.
 */
export function resizeRGB(rgba, width, height, outW, outH) {
  if (rgba.length !== width * height * 4) {
    throw new RangeError(`expected ${width * height * 4} RGBA bytes, got ${rgba.length}`);
  }
  if (!(outW >= 1 && outH >= 1 && width >= 1 && height >= 1)) {
    throw new RangeError(`cannot resize ${width}x${height} to ${outW}x${outH}`);
  }
  let out;
  if (outW === width && outH === height) {
    out = new Uint8Array(width * height * 3);
    for (let i = 0, j = 0; i < out.length; i += 3, j += 4) {
      out[i] = rgba[j];
      out[i + 1] = rgba[j + 1];
      out[i + 2] = rgba[j + 2];
    }
    return out;
  }
  if (height > width * 100 && outH < height) {
    // Image.resize's order for very tall images: vertical pass, then horizontal pass.
    out = vertical(rgba, 4, width, 0, coefficients(height, outH), outH);
    if (outW !== width) out = horizontal(out, 3, width, 0, outH, outW);
  } else if (outW === width) {
    out = vertical(rgba, 4, width, 0, coefficients(height, outH), outH);
  } else if (outH === height) {
    out = horizontal(rgba, 4, width, 0, height, outW);
  } else {
    const c = coefficients(height, outH);
    const first = c.bounds[0]; // source rows the vertical pass reads: first .. last - 1
    const last = c.bounds[outH * 2 - 2] + c.bounds[outH * 2 - 1];
    const tmp = horizontal(rgba, 4, width, first, last - first, outW);
    out = vertical(tmp, 3, outW, first, c, outH);
  }
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}
