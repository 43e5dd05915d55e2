"""The demo's page (gradio Blocks): layout and wiring only; every request is an app.handlers.Demo
method.

Public API endpoints (gradio_client; arguments in order, files as gradio_client.handle_file):
    /repose_photo    (model, source photo, target photo)
    /repose_gallery  (model, source photo, gallery pose number)
    /repose_pose     (model, source photo, pose JSON {"keypoints": [[x, y], ...18], "width", "height"})
    /animate         (model, source photo, gallery pose numbers "0, 5, 9, 12")
each returning (source with skeleton, target skeleton, result PNG or GIF, status line).
Photo inputs skip gradio's own decoding (preprocess=False): the handlers decode them with the
pixel cap, so an oversized or broken upload is a message, not a failed request.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import gradio as gr

from app.handlers import Demo
from pipeline.core.keypoints import JOINTS
from pipeline.infer.poses import skeleton_picture

INTRO = """# Re-pose a person
Give a photo of a person (upload, webcam or an example), choose a target pose (from the
gallery, from a second photo, or drawn by hand), and the Deformable GAN draws the same
person in that pose. Errors and the time each request took show below the pictures."""
THUMB_SCALE = 1  # gallery thumbnails at the poses' own frame size
# The generated picture fills its box like the (2x) pictures beside it, in crisp pixels.
CSS = "#result img { height: 100%; object-fit: contain; image-rendering: pixelated; }"


def _gallery_items(demo: Demo) -> list[tuple]:
    g = demo.gallery
    items = []
    for i in range(len(g)):
        w, h = (int(v) for v in g.frames[i])
        items.append((skeleton_picture(g.at(i, (h, w)), (h, w), THUMB_SCALE), str(i)))
    return items


def _model_choices(demo: Demo) -> list[tuple[str, str]]:
    """(shown, value) per checkpoint: the file name when that is unambiguous, else the path;
    the value (what the API takes) is always the path as given on the command line."""
    names = [Path(m).name for m in demo.models]
    return [(n if names.count(n) == 1 else m, m) for n, m in zip(names, demo.models)]


def build_page(demo: Demo, examples: Sequence[str]) -> gr.Blocks:
    model_events = dict(preprocess=False, concurrency_id="model", concurrency_limit=1)
    with gr.Blocks(title="Deformable GAN: re-pose a person") as page:
        gr.Markdown(INTRO)
        model = gr.Dropdown(_model_choices(demo), value=demo.default_model, label="Generator checkpoint")
        with gr.Row():
            with gr.Column(scale=1, min_width=240):
                source = gr.Image(label="Source person", sources=["upload", "webcam"], type="filepath",
                                  height=300, elem_id="source")
                if examples:
                    gr.Examples([[str(p)] for p in examples], inputs=[source], label="Examples",
                                examples_per_page=8)
            with gr.Column(scale=3):
                with gr.Tabs():
                    with gr.Tab("Gallery pose", elem_id="tab-gallery"):
                        gallery = gr.Gallery(_gallery_items(demo), label="Test-set poses (click one)",
                                             columns=8, height=330, allow_preview=False,
                                             object_fit="contain", elem_id="pose-gallery")
                        with gr.Row():
                            index = gr.Number(0, precision=0, label="Chosen pose", elem_id="pose-index")
                            go_gallery = gr.Button("Re-pose into the chosen pose", variant="primary",
                                                   elem_id="go-gallery")
                    with gr.Tab("Pose of a photo"):
                        target = gr.Image(label="Target person", sources=["upload", "webcam"],
                                          type="filepath", height=300)
                        go_photo = gr.Button("Re-pose into this person's pose", variant="primary")
                    with gr.Tab("Edit a pose"):
                        pose_text = gr.Textbox(demo.gallery_pose_json(0), label="Pose (JSON)", lines=2,
                                               elem_id="pose-json")
                        with gr.Row():
                            joint = gr.Dropdown(list(JOINTS), value="r_wrist", label="Joint to move")
                            start = gr.Button("Start from the chosen gallery pose")
                        canvas = gr.Image(demo.editor_picture(demo.gallery_pose_json(0))[0], format="png",
                                          label="Click where the joint goes", interactive=False,
                                          elem_id="pose-canvas")
                        go_edit = gr.Button("Re-pose into the edited pose", variant="primary")
                    with gr.Tab("Animation"):
                        sequence = gr.Textbox("0, 1, 2, 3", label="Gallery poses, in order")
                        go_anim = gr.Button("Animate (GIF)", variant="primary")
                with gr.Row():
                    shown_source = gr.Image(label="Source and its skeleton", format="png", height=300,
                                            interactive=False)
                    shown_target = gr.Image(label="Target pose", format="png", height=300, interactive=False)
                    result = gr.Image(label="Generated (download: top right)", type="filepath", height=300,
                                      interactive=False, elem_id="result")
                status = gr.Markdown(elem_id="status")
        outputs = [shown_source, shown_target, result, status]

        def chosen(evt: gr.SelectData) -> int:
            return int(evt.index)

        def clicked(text: str, name: str, evt: gr.SelectData):
            return demo.click_joint(text, name, evt.index)

        gallery.select(chosen, None, index, api_visibility="private")
        start.click(lambda i: demo.gallery_pose_json(i), index, pose_text, api_visibility="private") \
            .then(demo.editor_picture, pose_text, [canvas, status], api_visibility="private")
        pose_text.blur(demo.editor_picture, pose_text, [canvas, status], api_visibility="private")
        canvas.select(clicked, [pose_text, joint], [pose_text, canvas, status], api_visibility="private")
        go_gallery.click(demo.repose_gallery, [model, source, index], outputs, api_name="repose_gallery",
                         **model_events)
        go_photo.click(demo.repose_photo, [model, source, target], outputs, api_name="repose_photo",
                       **model_events)
        go_edit.click(demo.repose_pose, [model, source, pose_text], outputs, api_name="repose_pose",
                      **model_events)
        go_anim.click(demo.animate, [model, source, sequence], outputs, api_name="animate", **model_events)
    return page
