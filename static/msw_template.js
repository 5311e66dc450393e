// The widget's markup and style (the page around it is styled by msw_page.css).

export const HTML = `
<div class="msw-bar">
  <div class="msw-modes" role="radiogroup" aria-label="Click adds">
    <button type="button" data-mode="add" class="on" role="radio" aria-checked="true"
      title="click: include point">+ Add</button>
    <button type="button" data-mode="remove" role="radio" aria-checked="false"
      title="click: exclude point (or right-click / Alt-click)">− Remove</button>
    <button type="button" data-mode="box" role="radio" aria-checked="false"
      title="drag, or tap two corners">▭ Box</button>
  </div>
  <button type="button" data-act="undo" title="Undo (U)">Undo</button>
  <button type="button" data-act="clear" title="Clear the current object (Esc)">Clear</button>
  <button type="button" data-act="keep" class="msw-primary" title="Keep this object and start the next (K)">Keep object</button>
  <button type="button" data-act="export" title="Download masks, cut-outs and COCO JSON (E)">Export</button>
  <button type="button" data-act="unkeep" class="msw-local" title="Remove the last kept object">Remove last kept</button>
</div>
<div class="msw-device-row">
  <label class="msw-device" hidden><input type="checkbox" data-act="device"> On this device: the image is
    never uploaded</label>
  <span class="msw-device-note"></span>
</div>
<div class="msw-open msw-local">
  <button type="button" data-act="open" class="msw-primary">Open an image…</button>
  <input type="file" accept="image/*" hidden>
  <span class="msw-examples"></span>
  <span class="msw-drop-hint">or drop / paste an image here</span>
</div>
<div class="msw-info"><span class="msw-tech"></span><span class="msw-live" role="status" aria-live="polite">loading the in-browser decoder…</span></div>
<div class="msw-stage">
  <img class="msw-img" alt="">
  <canvas class="msw-objects" aria-hidden="true"></canvas>
  <canvas class="msw-overlay" tabindex="-1" role="application" aria-label="Image to segment"
    aria-describedby="msw-keys"></canvas>
  <div class="msw-spinner" aria-hidden="true"></div>
</div>
<div class="msw-cands" role="group" aria-label="Candidate masks"></div>
<div class="msw-downloads msw-local" aria-live="polite"></div>
<p class="msw-keys" id="msw-keys">Keyboard: focus the image, arrows move the crosshair (Shift: faster),
Enter adds a point, Shift+Enter excludes one, B sets a box corner, 1–3 pick a candidate, U undo,
K keep, Esc clear, E export.</p>`;

export const CSS = `
.msw-root{--msw-accent:#1e90ff}
.msw-bar{display:flex;flex-wrap:wrap;gap:6px;align-items:center;margin:4px 0}
.msw-root .msw-bar button,.msw-root .msw-cands button{padding:0 12px;height:36px;box-sizing:border-box;border:1px solid #bbb;
  border-radius:6px;background:#f6f6f6;color:#222;cursor:pointer;font-size:14px;font-weight:500;line-height:1.2;white-space:nowrap}
.msw-root .msw-bar button.on{background:var(--msw-accent);color:#fff;border-color:var(--msw-accent)}
.msw-root .msw-bar .msw-primary{background:#f97316;color:#fff;border-color:#f97316}
.msw-root button:focus-visible,.msw-overlay:focus-visible{outline:3px solid var(--msw-accent);outline-offset:2px}
.msw-modes{display:inline-flex;gap:2px}
.msw-info{font-size:.9em;color:#444;margin:2px 0 4px;min-height:1.3em}
.msw-stage{position:relative;display:inline-block;max-width:100%;line-height:0;user-select:none;-webkit-user-select:none}
.msw-stage img{max-width:100%;max-height:max(240px,calc(100vh - 190px));width:auto;height:auto;display:block}
.msw-stage canvas{position:absolute;left:0;top:0;width:100%;height:100%}
.msw-overlay{cursor:crosshair;touch-action:pan-x pan-y pinch-zoom}
.msw-spinner{display:none;position:absolute;right:8px;top:8px;width:22px;height:22px;border-radius:50%;
  border:3px solid #fff8;border-top-color:var(--msw-accent);animation:msw-spin .8s linear infinite}
.msw-stage[aria-busy=true] .msw-spinner{display:block}
@keyframes msw-spin{to{transform:rotate(360deg)}}
.msw-cands{display:flex;flex-wrap:wrap;gap:6px;margin-top:4px;min-height:0}
.msw-root .msw-cands button.on{border-color:var(--msw-accent);box-shadow:0 0 0 2px #1e90ff55}
.msw-keys{font-size:.8em;color:#666;margin:4px 0 0;line-height:1.3}
.msw-root:not(.msw-on-device) .msw-local{display:none}
.msw-device-row{font-size:.9em;margin:2px 0}
.msw-device-note{color:#555;margin-left:6px}
.msw-open{display:flex;flex-wrap:wrap;gap:6px;align-items:center;margin:4px 0}
.msw-root .msw-open button{padding:0 12px;height:36px;box-sizing:border-box;border:1px solid #bbb;border-radius:6px;
  background:#f6f6f6;color:#222;cursor:pointer;font-size:14px}
.msw-root .msw-open .msw-primary{background:#f97316;color:#fff;border-color:#f97316}
.msw-drop-hint{color:#666;font-size:.85em}
.msw-root.msw-drag .msw-stage,.msw-root.msw-drag .msw-open{outline:3px dashed var(--msw-accent)}
.msw-downloads a{display:inline-block;margin:2px 10px 2px 0}
.msw-standalone.msw-no-image .msw-bar,.msw-standalone.msw-no-image .msw-cands,.msw-standalone .msw-tech{display:none}
@media (pointer: coarse){.msw-keys{display:none}
  .msw-root .msw-bar button,.msw-root .msw-cands button,.msw-root .msw-open button{height:44px}
  .msw-root .msw-downloads a{display:inline-flex;align-items:center;min-height:44px}
  .msw-root label:has(> input[type=checkbox]){display:inline-flex;align-items:center;min-height:44px}
  .msw-root input[type=checkbox]{width:24px;height:24px}}`;

// The widget replaces element's content -> its root
export function buildRoot(element) {
  const root = document.createElement("div");
  root.className = "msw-root";
  root.innerHTML = `<style>${CSS}</style>` + HTML;
  element.replaceChildren(root);
  return root;
}
