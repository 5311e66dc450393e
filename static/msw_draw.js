// Drawing: the image, the overlay (the current mask or a hover preview, the prompts' markers, a
// box being dragged, the keyboard crosshair), the kept objects' layer and the candidate buttons.
// `scene` is what other modules put on the overlay besides the prompts: the hover preview
// (msw_hover.js), the drag and the crosshair (msw_input.js).
import { colorFor } from "./msw_runtime.js";

export const WHITE = [255, 255, 255];
export const COMMITTED_ALPHA = 150, PREVIEW_ALPHA = 70;   // a hover preview is visibly lighter, unoutlined

export const coarse = () => window.matchMedia && window.matchMedia("(pointer: coarse)").matches;

// keptCount() -> how many objects are kept (the next one's colour); pick(i): a candidate button
export class Drawing {
  constructor({ root, S, prompts, debug, status, keptCount, pick }) {
    Object.assign(this, { root, S, prompts, debug, status, keptCount, pick });
    const $ = (s) => root.querySelector(s);
    this.img = $(".msw-img"); this.overlay = $(".msw-overlay"); this.objCanvas = $(".msw-objects");
    this.stage = $(".msw-stage"); this.cands = $(".msw-cands");
    this.ctx = this.overlay.getContext("2d"); this.objCtx = this.objCanvas.getContext("2d");
    this.scene = { preview: null, drag: null, kb: null };
  }

  paintSpec(alpha, edge, all) {   // how the worker paints a mask for this overlay
    const { S, overlay } = this, color = colorFor(S.cfg.palette, this.keptCount());
    return { inputSize: S.view.input_size, h: overlay.height, w: overlay.width, color, alpha, edge, all };
  }

  putPaint(rgba) {
    const im = new ImageData(rgba, this.overlay.width, this.overlay.height);
    this.ctx.putImageData(im, 0, 0);
  }

  cssPx() {   // overlay pixels per CSS pixel
    return this.overlay.width / Math.max(this.overlay.getBoundingClientRect().width, 1);
  }

  drawMarkers(points, box, corner) {
    const { ctx, overlay } = this, s = overlay.width / this.S.view.width, px = this.cssPx();
    const r = Math.max((coarse() ? 11 : 6) * px, overlay.width / 160);   // touch: a finger-sized marker
    this.debug.markerRadiusCss = r / px;
    ctx.lineWidth = Math.max(2, r / 3);
    if (box) { ctx.strokeStyle = "#ffd700"; ctx.strokeRect(box[0] * s, box[1] * s, (box[2] - box[0]) * s, (box[3] - box[1]) * s); }
    if (corner) { ctx.fillStyle = "#ffd700"; ctx.fillRect(corner[0] * s - r / 2, corner[1] * s - r / 2, r, r); }
    for (const [x, y, l] of points) {
      ctx.beginPath(); ctx.arc(x * s, y * s, r, 0, 2 * Math.PI);
      ctx.fillStyle = l === 1 ? "#28c850" : "#e63232"; ctx.fill(); ctx.strokeStyle = "#fff"; ctx.stroke();
      ctx.beginPath(); ctx.moveTo(x * s - r / 2, y * s); ctx.lineTo(x * s + r / 2, y * s);
      if (l === 1) { ctx.moveTo(x * s, y * s - r / 2); ctx.lineTo(x * s, y * s + r / 2); }
      ctx.stroke();
    }
  }

  drawCrosshair(kb) {
    const { ctx, overlay } = this;
    if (!kb || !overlay.matches(":focus-visible")) return;   // keyboard focus only, not after a click
    const s = overlay.width / this.S.view.width, x = kb[0] * s, y = kb[1] * s;
    const px = this.cssPx(), a = 14 * px;
    for (const [c, w] of [["#000", 5 * px], ["#fff", 2 * px]]) {
      ctx.strokeStyle = c; ctx.lineWidth = w;
      ctx.beginPath(); ctx.moveTo(x - a, y); ctx.lineTo(x + a, y); ctx.moveTo(x, y - a); ctx.lineTo(x, y + a); ctx.stroke();
    }
  }

  redraw() {
    const { ctx, overlay } = this;
    if (!this.S.view) { ctx.clearRect(0, 0, overlay.width, overlay.height); return; }
    ctx.clearRect(0, 0, overlay.width, overlay.height);
    const st = this.prompts.st, res = st.result, { preview, drag } = this.scene;
    if (preview) this.putPaint(preview.paint);
    else if (res && res.paints[res.selected]) this.putPaint(res.paints[res.selected]);
    this.drawMarkers(preview ? preview.points : st.points, st.box, st.corner);
    if (drag && drag.box) this.drawMarkers([], drag.box, null);
    this.drawCrosshair(this.scene.kb);
    this.updateCandidates(res);
    this.status.render();
  }

  // Candidate buttons are updated in place (rebuilding them would drop a keyboard focus on them).
  updateCandidates(res) {
    const cands = this.cands, n = res && res.low.length > 1 ? res.iou.length : 0;
    while (cands.children.length > n) cands.lastChild.remove();
    while (cands.children.length < n) {
      const b = document.createElement("button"), i = cands.children.length;
      b.type = "button";
      b.onclick = () => this.pick(i);
      cands.appendChild(b);
    }
    [...cands.children].forEach((b, i) => {
      const text = `mask ${i + 1} · IoU ${res.iou[i].toFixed(3)}`;
      if (b.textContent !== text) b.textContent = text;
      b.setAttribute("aria-pressed", String(i === res.selected));
      b.classList.toggle("on", i === res.selected);
    });
  }

  // ------------------------------------------------------------ the image and the kept layer
  // The overlay is a tab stop only while it shows an image (else it is an empty 0x0 stop).
  showImage(src) {   // -> once it has loaded (or failed to)
    const img = this.img;
    this.overlay.tabIndex = 0;
    return new Promise((ok) => { img.onload = ok; img.onerror = ok; img.src = src; });
  }
  hideImage() { this.img.removeAttribute("src"); this.overlay.tabIndex = -1; }
  sizeTo(v) {   // the canvases at the image's display size
    for (const c of [this.overlay, this.objCanvas]) { c.width = v.display_width; c.height = v.display_height; }
  }
  clearKept() { this.objCtx.clearRect(0, 0, this.objCanvas.width, this.objCanvas.height); }
  drawKept(rgba) {
    const tmp = document.createElement("canvas"), objCtx = this.objCtx;
    tmp.width = this.overlay.width; tmp.height = this.overlay.height;
    tmp.getContext("2d").putImageData(new ImageData(rgba, tmp.width, tmp.height), 0, 0);
    objCtx.globalAlpha = 0.8; objCtx.drawImage(tmp, 0, 0); objCtx.globalAlpha = 1;
  }
  drawKeptImage(im) { this.objCtx.drawImage(im, 0, 0, this.objCanvas.width, this.objCanvas.height); }

  setBusy(on) { this.stage.setAttribute("aria-busy", String(on)); }

  revealStage() {   // on a phone the image may sit below the fold: bring it (and its candidates) into view
    const r = this.root.getBoundingClientRect();
    if (r.top < 0 || r.top > window.innerHeight * 0.5 || this.cands.getBoundingClientRect().bottom > window.innerHeight) {
      this.root.scrollIntoView({ behavior: "smooth", block: "start" });
    }
  }
}
