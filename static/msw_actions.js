// The bar's actions: undo, clear, keep the object, export, remove the last kept object. Keeping
// and exporting go to the server (server mode) or stay on this device (msw_device.js).
import { resetPrompts } from "./msw_prompts.js";

export class Actions {
  constructor({ S, prompts, root, draw, status, clicks, device, downloads, server }) {
    Object.assign(this, { S, prompts, draw, status, device, downloads, server });
    const act = (name, fn) => { root.querySelector(`[data-act=${name}]`).onclick = fn; };
    act("undo", () => clicks.undo());
    act("clear", () => clicks.clear());
    act("keep", () => this.keep());
    act("export", () => this.exportNow());
    act("unkeep", () => device.unkeep());
  }

  keep() {
    const { S, draw, status } = this, r = this.prompts.st.result;
    if (!r || S.busy) { status.say(S.busy ? "wait for the mask, then keep it" : "add a point or a box first", 4000); return; }
    const paint = r.paints[r.selected];
    if (paint) draw.drawKept(paint);   // at once; in server mode the server's layer replaces this
    if (S.view.local) this.device.keep(r); else this.server.keep();
    resetPrompts(this.prompts); draw.scene.preview = null;
    status.say("object kept", 3000);
    draw.redraw();
  }

  exportNow() {
    if (this.S.device) { this.downloads.exportLocal(); return; }   // never a server event in on-device mode
    this.server.exportNow();
  }
}
