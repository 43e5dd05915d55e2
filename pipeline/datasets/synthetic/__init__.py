"""Offline synthetic person dataset in Market-1501 layout (procedurally rendered people).

`generate(out_dir, cfg, height, width, seed)` is the entry point used by the download stage;
body (kinematic pose model), identity (appearance), render (drawing), background (camera
scenes) and dataset (files, names, annotations) are its parts.
"""
from pipeline.datasets.synthetic.dataset import (
    Sample,
    generate,
    make_identity,
    render_extra,
    render_sample,
)

__all__ = ["Sample", "generate", "make_identity", "render_extra", "render_sample"]
