"""The image encoders this package builds, by segment-anything-style model type (no torch here:
the app and the ONNX engine name the model without it)."""

MODEL_NAMES = {
    "vit_t": "MobileSAM (TinyViT)",
    "vit_b": "SAM ViT-B",
    "vit_l": "SAM ViT-L",
    "vit_h": "SAM ViT-H",
    "efficientvit_l0": "EfficientViT-SAM-L0",
    "efficientvit_l1": "EfficientViT-SAM-L1",
    "efficientvit_l2": "EfficientViT-SAM-L2",
}

# Seconds one image's encoding takes with ONNX Runtime on 2 cores (a free Hugging Face Space),
# measured by bench/bench_encoders.py on this project's 2-core machine (ViT-L: not measured,
# scaled from ViT-B and ViT-H by its FLOPs). The app says so before a visitor waits, until it has
# measured its own.
ENCODE_SECONDS_2_CORES = {
    "vit_t": 0.85,
    "vit_b": 8.5,
    "vit_l": 28.0,
    "vit_h": 60.0,
    "efficientvit_l0": 1.0,
    "efficientvit_l1": 1.05,
    "efficientvit_l2": 1.55,
}
