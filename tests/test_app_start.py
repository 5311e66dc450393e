"""The app builds with and without weights (without: it shows the actionable message)."""
import gradio as gr

from mobilesam_web.ui import build_app


def test_app_builds_without_weights(tmp_path):
    demo = build_app(checkpoint=str(tmp_path / "missing.pt"))
    assert isinstance(demo, gr.Blocks)
    texts = [getattr(b, "value", "") for b in demo.blocks.values()]
    assert any("missing.pt" in str(t) and "unavailable" in str(t) for t in texts)


def test_app_builds_with_weights(sam_weights_path):
    assert isinstance(build_app(checkpoint=str(sam_weights_path)), gr.Blocks)
