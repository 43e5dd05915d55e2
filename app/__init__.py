"""The web demo (`python -m app`): a gradio page on top of pipeline.infer (handlers: the
requests; ui: the page). It holds no model, pose or image logic of its own."""
