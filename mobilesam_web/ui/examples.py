"""Bundled example images (examples/ at the repository root; sources and licences in
examples/CREDITS.md) offered as one-click starts on both tabs.

Gradio copies each example into its upload folder when the app is built, and a click only
sends the example's index: the handlers receive a path inside the upload folder, so the rule
"only files uploaded to this server" holds unchanged and no client-named path gets through.
"""

from pathlib import Path
from typing import List, Optional

import gradio as gr

from ..paths import EXAMPLE_IMAGES, examples_dir

EXAMPLES_DIR = examples_dir()
EXAMPLES = EXAMPLE_IMAGES


def example_files() -> List[Path]:
    """The example images present (none when the package is installed without the folder)."""
    return [EXAMPLES_DIR / name for name, _ in EXAMPLES if (EXAMPLES_DIR / name).is_file()]


def add_examples(target: gr.File, elem_id: Optional[str] = None) -> Optional[gr.Examples]:
    """A row of examples that load into `target` when clicked (call inside a Blocks context).
    The caller runs its handler on the click: `examples.load_input_event.then(...)`, or through
    `target.change`."""
    files = example_files()
    if not files:
        return None
    labels = dict(EXAMPLES)
    examples = gr.Examples(
        [[str(p)] for p in files],
        inputs=[target],
        label="Examples (click one to start)",
        example_labels=[labels[p.name] for p in files],
        cache_examples=False,
        elem_id=elem_id,
    )
    # Gradio's delete_cache would otherwise remove the copies an hour in, and a click on an
    # example would then hand the handler a missing file.
    for processed in examples.non_none_processed_examples.values():
        for value in processed:
            if isinstance(value, dict) and value.get("path"):
                target.keep_in_cache.add(value["path"])
    return examples
