// The prompts of the object being made and the decoder request they make. Pure: no DOM, no
// workers, so the rules can be tested on their own.
//
// p = {st, version}: st holds the points ([x, y, label] in image pixels; label 1 includes, 0
// excludes), the box, a box's first corner (box mode, or the B key), the last decoded result and
// the undo history; `version` changes whenever the prompts do, so a decode that started before
// a change knows its result is stale.

export const emptyPrompts = () => ({ points: [], box: null, corner: null, result: null, history: [] });

export const createPrompts = () => ({ st: emptyPrompts(), version: 0 });

// A new object, or new prompts altogether (another image, or on-device work coming back).
export function resetPrompts(p, st = emptyPrompts()) {
  p.st = st;
  p.version++;
}

// -> false (and no change) above maxPoints points; else the prompts are replaced, undoably.
export function commitPrompts(p, points, box, maxPoints) {
  if (points.length > maxPoints) return false;
  const st = p.st;
  st.history.push({ points: st.points, box: st.box, result: st.result });
  st.points = points; st.box = box; p.version++;
  return true;
}

// A box's first corner is undone first (it was never decoded), then the last commit.
export function undoPrompts(p) {
  const st = p.st;
  if (st.corner) st.corner = null;
  else if (st.history.length) { Object.assign(st, st.history.pop()); p.version++; }
}

// The first corner is kept (-> null: nothing to decode yet); the second makes the box
// -> {points, box} to commit.
export function cornerPrompt(st, x, y) {
  if (!st.corner) { st.corner = [x, y]; return null; }
  const c = st.corner;
  st.corner = null;
  return { points: st.points, box: [Math.min(c[0], x), Math.min(c[1], y), Math.max(c[0], x), Math.max(c[1], y)] };
}

// A click, tap or Enter at image pixel (x, y): a box corner in box mode, else a point.
export function placePrompt(st, mode, x, y, label) {
  if (mode === "box") return cornerPrompt(st, x, y);
  return { points: [...st.points, [x, y, label]], box: st.box };
}

// ------------------------------------------------------------------- prompts -> the decoder
// Image pixels -> the resized frame the decoder works in (longest side 1024).
export const to1024 = (view, x, y) => [x * view.input_size[1] / view.width, y * view.input_size[0] / view.height];

function inFrame(view, points, box) {
  return {
    points: points.map(([x, y, l]) => [...to1024(view, x, y), l]),
    box: box ? [...to1024(view, box[0], box[1]), ...to1024(view, box[2], box[3])] : null,
  };
}

// SAM's rule: one point alone is ambiguous (three candidates); anything more asks for one mask.
export const multimaskFor = (points, box) => points.length === 1 && !box;

// The worker's "decode" request. The previous result's mask goes along as a hint only when
// refining is on and one mask is asked for (a candidate of an ambiguous point would mislead).
export function decoderRequest({ view, token, points, box, prev, refine, paint }) {
  const multimask = multimaskFor(points, box);
  const maskInput = refine && prev && !multimask ? prev.low[prev.selected] : null;
  return { type: "decode", token, multimask, maskInput, paint, ...inFrame(view, points, box) };
}

// The worker's "full" request (test hook): masks at the image's own size, never refined.
export function fullRequest({ view, token, points, box }) {
  return { type: "full", token, multimask: multimaskFor(points, box), maskInput: null,
           inputSize: view.input_size, size: [view.height, view.width], ...inFrame(view, points, box) };
}

// What the tests read of the last request (mswDebug.lastRequest).
export function requestSummary(req) {
  return { points: req.points.length, box: !!req.box, multimask: req.multimask, hasMaskInput: !!req.maskInput };
}
