// What the visitor does on the image. Mouse and pen: a click adds a point (right-, Alt- or
// Shift-click excludes), a drag draws a box, hovering previews. Touch: a tap adds a point, a
// swipe is left to the browser (scroll). Keyboard (the page's key list, #msw-keys): arrows move
// a crosshair, Enter adds a point there, B sets a box corner, 1-3 pick a candidate, U undo, K
// keep, Esc clear, E export. The drag and the crosshair are drawn from draw.scene.
import { cornerPrompt, placePrompt } from "./msw_prompts.js";

const ARROWS = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };

export class Input {
  constructor({ S, prompts, root, draw, clicks, hover, actions }) {
    Object.assign(this, { S, prompts, draw, clicks, hover, actions });
    this.overlay = draw.overlay;
    this.state = { mode: "add", touch: null };   // what a click adds; a tap in progress
    const on = (type, fn) => this.overlay.addEventListener(type, fn);
    on("contextmenu", (e) => e.preventDefault());
    on("pointerdown", (e) => this.pointerDown(e));
    on("pointermove", (e) => this.pointerMove(e));
    on("pointercancel", () => { this.state.touch = null; draw.scene.drag = null; });
    on("pointerup", (e) => this.pointerUp(e));
    on("pointerleave", () => { S.pointerIn = false; hover.end(); });
    on("focus", () => {
      if (S.view && !draw.scene.kb) draw.scene.kb = [S.view.width / 2, S.view.height / 2];
      draw.redraw();
    });
    on("blur", () => { hover.end(); draw.redraw(); });
    on("keydown", (e) => this.keyDown(e));
    root.querySelectorAll("[data-mode]").forEach((b) => b.addEventListener("click", () => {
      this.state.mode = b.dataset.mode; prompts.st.corner = null;
      root.querySelectorAll("[data-mode]").forEach((o) => {
        o.classList.toggle("on", o === b); o.setAttribute("aria-checked", String(o === b));
      });
      draw.redraw();
    }));
  }

  eventXY(e) {   // -> image pixels
    const r = this.overlay.getBoundingClientRect(), v = this.S.view;
    return [Math.min(Math.max((e.clientX - r.left) / r.width, 0), 0.9999) * v.width,
            Math.min(Math.max((e.clientY - r.top) / r.height, 0), 0.9999) * v.height];
  }
  clickLabel() { return this.state.mode === "remove" ? 0 : 1; }
  place(x, y, label) {   // a click, tap or Enter at image pixel (x, y)
    this.commit(placePrompt(this.prompts.st, this.state.mode, x, y, label));
  }
  commit(next) {   // null: only a box's first corner, nothing to decode yet
    if (next) this.clicks.commit(next.points, next.box); else this.draw.redraw();
  }

  // ----------------------------------------------------------------- pointer & touch
  pointerDown(e) {
    if (!this.S.view) return;
    if (e.pointerType === "touch") {   // a tap adds a point; a swipe is left to the browser (scroll)
      this.state.touch = { id: e.pointerId, x: e.clientX, y: e.clientY, t: performance.now() };
      return;
    }
    this.overlay.setPointerCapture(e.pointerId);
    const [x, y] = this.eventXY(e);
    this.draw.scene.drag = { x, y, moved: false, negative: e.button === 2 || e.altKey || e.shiftKey, box: null };
    this.hover.end();
  }
  pointerMove(e) {
    const { S, state } = this;
    if (!S.view) return;
    if (e.pointerType === "touch") {
      const t = state.touch;
      if (t && Math.hypot(e.clientX - t.x, e.clientY - t.y) > 10) state.touch = null;
      return;
    }
    S.pointerIn = true;
    const [x, y] = this.eventXY(e), drag = this.draw.scene.drag;
    if (drag) {
      const far = Math.hypot(x - drag.x, y - drag.y) * this.overlay.width / S.view.width > 6;
      if (far) {
        drag.moved = true;
        drag.box = [Math.min(x, drag.x), Math.min(y, drag.y), Math.max(x, drag.x), Math.max(y, drag.y)];
        this.draw.redraw();
      }
      return;
    }
    if (state.mode !== "box") this.hover.at(x, y, this.clickLabel());
  }
  pointerUp(e) {
    const { state, prompts } = this, scene = this.draw.scene;
    const [x, y] = this.S.view ? this.eventXY(e) : [0, 0];
    if (e.pointerType === "touch") {
      const t = state.touch; state.touch = null;
      if (t && t.id === e.pointerId && performance.now() - t.t < 800) this.place(x, y, this.clickLabel());
      return;
    }
    if (!scene.drag) return;
    const d = scene.drag; scene.drag = null;
    if (d.moved && d.box) { prompts.st.corner = null; this.clicks.commit(prompts.st.points, d.box); return; }
    this.place(x, y, d.negative || state.mode === "remove" ? 0 : 1);
  }

  // ------------------------------------------------------------------------ keyboard
  moveCrosshair(dir, shift) {
    const { S, draw } = this, scene = draw.scene, kb = scene.kb;
    const step = (shift ? 0.1 : 0.02) * Math.max(S.view.width, S.view.height);
    scene.kb = [Math.min(Math.max(kb[0] + dir[0] * step, 0), S.view.width - 1),
                Math.min(Math.max(kb[1] + dir[1] * step, 0), S.view.height - 1)];
    S.pointerIn = true;
    this.hover.at(scene.kb[0], scene.kb[1], 1);
    draw.redraw();
  }
  keyDown(e) {
    const { clicks, actions } = this;
    if (!this.S.view || e.ctrlKey && e.key !== "z" || e.metaKey || e.altKey) return;
    const k = e.key.length === 1 ? e.key.toLowerCase() : e.key, kb = this.draw.scene.kb, st = this.prompts.st;
    if (ARROWS[e.key]) this.moveCrosshair(ARROWS[e.key], e.shiftKey);
    else if (e.key === "Enter" || e.key === " ") {
      this.hover.end();
      this.place(kb[0], kb[1], e.shiftKey || this.state.mode === "remove" ? 0 : 1);
    } else if (k === "-") clicks.commit([...st.points, [kb[0], kb[1], 0]], st.box);
    else if (k === "b") this.commit(cornerPrompt(st, kb[0], kb[1]));   // a box corner in any mode
    else if (k === "u" || k === "Backspace" || (e.ctrlKey && k === "z")) clicks.undo();
    else if (k === "k") actions.keep();
    else if (k === "Escape") clicks.clear();
    else if (k === "e") actions.exportNow();
    else if (["1", "2", "3"].includes(k)) clicks.pick(+k - 1);
    else return;
    e.preventDefault();
  }
}
