"""The engine: MobileSAM's models in PyTorch (`modeling/`), checkpoints (finding them:
`checkpoints`, loading them: `weights`, `safe_unpickle`, `build`), the torch `SamPredictor`, and
`onnx/`: the exported graphs and the ONNX Runtime predictor.

Above `data/`; below the pipelines (`everything/`) and the applications."""
