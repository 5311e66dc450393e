// On-device downloads: the kept objects (and the current mask) exported by the click worker
// (msw_exports.js there), shown as links under the image; nothing is sent anywhere.
import { b64 } from "./msw_runtime.js";
import { MB } from "./msw_status.js";

const sizeText = (n) => {
  const kb = n / 1024;
  return kb < 1 ? `${n} bytes` : kb < 1024 ? `${kb.toFixed(0)} kB` : `${MB(n)} MB`;
};

export class Downloads {
  constructor({ S, prompts, debug, root, status, clicks, device }) {
    Object.assign(this, { S, prompts, debug, status, clicks, device });
    this.box = root.querySelector(".msw-downloads");
    this.state = { urls: [] };   // the links' object URLs
    debug.downloadBytes = async (name) => {   // tests: one built download, base64
      const a = [...this.box.querySelectorAll("a")].find((x) => x.download === name);
      const bytes = new Uint8Array(await (await fetch(a.href)).arrayBuffer());
      return b64(bytes);
    };
  }

  clear() {
    for (const u of this.state.urls) URL.revokeObjectURL(u);
    this.state.urls = [];
    this.box.replaceChildren();
  }

  show(r) {   // the worker's files as links
    const box = this.box;
    this.clear();
    const head = document.createElement("div");
    head.textContent = `Downloads — ${r.summary}`;
    box.appendChild(head);
    for (const f of r.files) {
      const a = document.createElement("a"), u = URL.createObjectURL(f.blob);
      this.state.urls.push(u);
      a.href = u; a.download = f.name;
      a.textContent = `${f.name} (${sizeText(f.blob.size)})`;
      box.appendChild(a);
    }
    box.scrollIntoView({ behavior: "smooth", block: "nearest" });
    const first = box.querySelector("a");
    if (first) first.focus({ preventScroll: true });   // the keyboard goes on from the downloads
    this.debug.downloads = r.files.map((f) => f.name);
  }

  async exportLocal() {
    const { S, status } = this;
    if (!S.view || !S.view.local || S.image !== "ready") { status.say("open an image first", 4000); return; }
    const objects = this.device.state.kept.map((o) => ({ low: o.low, score: o.score }));
    const res = this.prompts.st.result;
    if (res && !S.busy) objects.push({ low: res.low[res.selected], score: res.iou[res.selected] });
    if (!objects.length) { status.say("nothing to export yet: click an object first", 4000); return; }
    const token = S.token;
    status.say("building the downloads on this device…");
    try {
      const r = await this.clicks.worker.call({ type: "export", token, objects });
      if (S.token !== token) return;   // another image meanwhile: these files are not for it
      this.show(r);
      status.say("downloads ready (built on this device)", 4000);
    } catch (err) {
      if (S.token === token) status.say(`export failed: ${err.message || err}`);
    }
  }

  dispose() { this.clear(); }
}
