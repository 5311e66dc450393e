// The page's side of a decoder worker (msw_worker.js, whose header lists the messages): each
// request gets an id and a promise that its reply settles; progress messages go to onProgress.

export class WorkerClient {
  constructor(onProgress) {
    this.w = new Worker(new URL("./msw_worker.js", import.meta.url), { type: "module" });
    this.seq = 0;
    this.waiting = new Map();
    this.token = null;   // the image whose embedding this worker holds
    this.w.onmessage = (e) => {
      const m = e.data;
      if (m.type === "progress") { if (onProgress) onProgress(m.got, m.total, m.what); return; }
      const p = this.waiting.get(m.id);
      if (!p) return;
      this.waiting.delete(m.id);
      if (m.type === "error") p.reject(new Error(m.error)); else p.resolve(m);
    };
    this.w.onerror = (e) => {
      for (const p of this.waiting.values()) p.reject(new Error(e.message || "decoder worker failed"));
      this.waiting.clear();
    };
  }
  call(msg, transfer) {
    const id = ++this.seq;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.w.postMessage({ ...msg, id }, transfer || []);
    });
  }
  async setEmbedding(token, f16) {
    await this.call({ type: "embedding", token, f16: f16.slice(0) });
    this.token = token;
  }
  terminate() { this.w.terminate(); }
}
