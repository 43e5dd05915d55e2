"""Transcriptions of the paper families' metric scripts, written from reading them, for tests
only: each function follows its script step by step (same reads, same order, same dtypes, the
same library calls), with the networks injected. The old skimage `compare_ssim` cast its inputs
to float64; its successor structural_similarity with channel_axis=2 is called the same way.

  GFLA   RenYurui/Global-Flow-Local-Attention script/metrics.py, script/inception.py
  DPTN   PangzeCheung/Dual-task-Pose-Transformer-Network metrics/metrics.py
  PIDM   ankanbhunia/PIDM utils/metrics.py
  CFLD   YanzuoLu/CFLD models/metrics.py, pose_transfer_test.py, datasets/deepfashion.py
  PATN   tengteng95/Pose-Transfer tool/getMetrics_fashion.py
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import linalg
from skimage.draw import disk, polygon
from skimage.metrics import structural_similarity
from skimage.morphology import dilation, erosion


def imread(path) -> np.ndarray:
    """imageio.imread of an RGB file (Pillow underneath)."""
    return np.asarray(Image.open(path).convert("RGB"))


def listing(folder) -> list[Path]:
    """glob('*.jpg') + glob('*.png'); sorted here (the scripts took the filesystem's order)."""
    folder = Path(folder)
    return sorted(folder.glob("*.jpg")) + sorted(folder.glob("*.png"))


class InceptionBlocks(torch.nn.Module):
    """script/inception.py's InceptionV3([3]) on torchvision's inception_v3 with `state`."""

    def __init__(self, state):
        super().__init__()
        from torchvision import models

        inc = models.inception_v3(weights=None, aux_logits=True, init_weights=False)
        inc.load_state_dict(state)
        mp = torch.nn.MaxPool2d(kernel_size=3, stride=2)
        self.blocks = torch.nn.ModuleList([
            torch.nn.Sequential(inc.Conv2d_1a_3x3, inc.Conv2d_2a_3x3, inc.Conv2d_2b_3x3, mp),
            torch.nn.Sequential(inc.Conv2d_3b_1x1, inc.Conv2d_4a_3x3, mp),
            torch.nn.Sequential(inc.Mixed_5b, inc.Mixed_5c, inc.Mixed_5d, inc.Mixed_6a, inc.Mixed_6b,
                                inc.Mixed_6c, inc.Mixed_6d, inc.Mixed_6e),
            torch.nn.Sequential(inc.Mixed_7a, inc.Mixed_7b, inc.Mixed_7c, torch.nn.AdaptiveAvgPool2d((1, 1))),
        ])
        self.eval()

    @torch.no_grad()
    def forward(self, inp):
        x = F.interpolate(inp, size=(299, 299), mode="bilinear")
        x = x.clone()
        x[:, 0] = x[:, 0] * (0.229 / 0.5) + (0.485 - 0.5) / 0.5
        x[:, 1] = x[:, 1] * (0.224 / 0.5) + (0.456 - 0.5) / 0.5
        x[:, 2] = x[:, 2] * (0.225 / 0.5) + (0.406 - 0.5) / 0.5
        for block in self.blocks:
            x = block(x)
        return [x]


# --------------------------------------------------------------------------- GFLA / DPTN / PIDM FID


class FID:
    def __init__(self, model, batch_size=64, load=None):
        self.model, self.batch_size, self.dims = model, batch_size, None
        self.load = load or (lambda fn: imread(fn).astype(np.float32))  # PIDM: cv2.resize(...)

    def calculate_from_disk(self, generated_path, gt_path):
        m1, s1 = self.compute_statistics_of_path(gt_path)
        m2, s2 = self.compute_statistics_of_path(generated_path)
        return self.calculate_frechet_distance(m1, s1, m2, s2)

    def compute_statistics_of_path(self, path):
        imgs = np.array([self.load(fn) for fn in listing(path)])
        imgs = imgs.transpose((0, 3, 1, 2))
        imgs /= 255
        act = self.get_activations(imgs)
        return np.mean(act, axis=0), np.cov(act, rowvar=False)

    @torch.no_grad()
    def get_activations(self, images):
        d0 = images.shape[0]
        if self.batch_size > d0:
            self.batch_size = d0  # (sic: it stays shrunk for the next set)
        n_batches = d0 // self.batch_size
        rows = []
        for i in range(n_batches):
            start, end = i * self.batch_size, (i + 1) * self.batch_size
            batch = torch.from_numpy(images[start:end]).type(torch.FloatTensor)
            pred = self.model(batch)[0]
            rows.append(pred.cpu().data.numpy().reshape(self.batch_size, -1))
        pred_arr = np.empty((n_batches * self.batch_size, rows[0].shape[1]))
        for i, r in enumerate(rows):
            pred_arr[i * self.batch_size:(i + 1) * self.batch_size] = r
        return pred_arr

    @staticmethod
    def calculate_frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
        diff = mu1 - mu2
        covmean, _ = linalg.sqrtm(sigma1.dot(sigma2), disp=False)
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
        if np.iscomplexobj(covmean):
            covmean = covmean.real
        return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


# --------------------------------------------------------------------------- SSIM


def pad_256(img):
    """DPTN metrics.py."""
    result = np.ones((256, 256, 3), dtype=float) * 255
    result[:, 40:216, :] = img
    return result


def compare_ssim(a, b, **kw):
    return structural_similarity(np.asarray(a, np.float64), np.asarray(b, np.float64), channel_axis=2, **kw)


def reconstruction(pred_list, gt_list, *, pad=False, sigma=1.5):
    """Reconstruction_Metrics.calculate_from_disk's ssim and ssim_256 (DPTN: pad_256 first;
    PIDM: sigma 1.2)."""
    ssim, ssim_256 = [], []
    for p, g in zip(pred_list, gt_list):
        if pad:
            img_gt = pad_256(imread(g)).astype(np.float32) / 255.0
            img_pred = pad_256(imread(p)).astype(np.float32) / 255.0
        else:
            img_gt = imread(g).astype(np.float32) / 255.0
            img_pred = imread(p).astype(np.float32) / 255.0
        ssim.append(compare_ssim(img_gt, img_pred, data_range=1, win_size=51))
        img_gt_256, img_pred_256 = img_gt * 255.0, img_pred * 255.0
        ssim_256.append(compare_ssim(img_gt_256, img_pred_256, gaussian_weights=True, sigma=sigma,
                                     use_sample_covariance=False,
                                     data_range=img_pred_256.max() - img_pred_256.min()))
    return float(np.mean(ssim)), float(np.mean(ssim_256))


# --------------------------------------------------------------------------- LPIPS


def produce_ma_mask(kp_array, img_size=(128, 64), point_radius=4):
    """GFLA / DPTN produce_ma_mask on (y, x) keypoints (skimage's circle is now disk)."""
    mask = np.zeros(shape=img_size, dtype=bool)
    limbs = np.array([[2, 3], [2, 6], [3, 4], [4, 5], [6, 7], [7, 8], [2, 9], [9, 10], [10, 11], [2, 12],
                      [12, 13], [13, 14], [2, 1], [1, 15], [15, 17], [1, 16], [16, 18], [2, 17], [2, 18],
                      [9, 12], [12, 6], [9, 3], [17, 18]]) - 1
    for f, t in limbs:
        if -1 in (kp_array[f][0], kp_array[f][1], kp_array[t][0], kp_array[t][1]):
            continue
        norm_vec = kp_array[f] - kp_array[t]
        norm_vec = np.array([-norm_vec[1], norm_vec[0]])
        norm_vec = point_radius * norm_vec / np.linalg.norm(norm_vec)
        v = np.array([kp_array[f] + norm_vec, kp_array[f] - norm_vec, kp_array[t] - norm_vec, kp_array[t] + norm_vec])
        yy, xx = polygon(v[:, 0], v[:, 1], shape=img_size)
        mask[yy, xx] = True
    for joint in kp_array:
        if joint[0] == -1 or joint[1] == -1:
            continue
        yy, xx = disk((joint[0], joint[1]), point_radius, shape=img_size)
        mask[yy, xx] = True
    return erosion(dilation(mask, np.ones((5, 5), bool)), np.ones((5, 5), bool))


@torch.no_grad()
def lpips_from_disk(model, files_1, files_2, batch_size=64, load=None, annotations=None):
    """GFLA LPIPS.calculate_from_disk (batch 64; DPTN: batch_size=1; PIDM: load =
    cv2.resize(..., (176, 256))); with `annotations` {gt name: (y, x) [18, 2]} the
    calculate_mask_lpips variant (mask of files_2's name, on [-1, 1] images)."""
    load = load or (lambda fn: imread(fn).astype(np.float32))
    imgs_1, imgs_2 = [], []
    for f1, f2 in zip(files_1, files_2):
        a, b = load(f1) / 127.5 - 1, load(f2) / 127.5 - 1
        if annotations is not None:
            mask = np.tile(np.expand_dims(produce_ma_mask(annotations[Path(f2).name]).astype(np.float32), -1), (1, 1, 3))
            a, b = a * mask, b * mask
        imgs_1.append(a)
        imgs_2.append(b)
    imgs_1 = np.array(imgs_1).transpose((0, 3, 1, 2))
    imgs_2 = np.array(imgs_2).transpose((0, 3, 1, 2))
    d0 = imgs_1.shape[0]
    batch_size = min(batch_size, d0)
    result = []
    for i in range(d0 // batch_size):
        s, e = i * batch_size, (i + 1) * batch_size
        result.append(model.forward(torch.from_numpy(imgs_1[s:e]).type(torch.FloatTensor),
                                    torch.from_numpy(imgs_2[s:e]).type(torch.FloatTensor)))
    return float(torch.cat(result, 0)[:, 0, 0, 0].mean())


def pidm_load(fn):
    return cv2.resize(imread(fn).astype(np.float32), (176, 256))


def deform_pairs(gt_path, distorted_path, ext=".jpg", prefix=""):
    """preprocess_path_for_deform_task: '<from>_2_<to>_vis.png' -> gt '<prefix><to><ext>'."""
    gts, preds = [], []
    for p in listing(distorted_path):
        name = p.name.split("_2_")[-1].split("_vis")[0] + ext
        g = Path(gt_path) / (prefix + name)
        if g.is_file():
            gts.append(g)
            preds.append(p)
    return gts, preds


# --------------------------------------------------------------------------- CFLD


@torch.no_grad()
def cfld(pred_files, gt_files, real_files, blocks, lpips_model, size=(256, 176), inception=None):
    """CFLD pose_transfer_test.eval + build_metric on released uint8 outputs (pred = u8 / 255,
    as sampling_imgs in [0, 1]); gt and real: transforms.Resize(size, BICUBIC, antialias) + ToTensor.
    inception: a network injected in place of forward_inception (resize, scaling, blocks)."""
    from torchvision import transforms

    t = transforms.Compose([transforms.Resize(list(size), interpolation=transforms.InterpolationMode.BICUBIC,
                                              antialias=True), transforms.ToTensor()])

    def forward_inception(x):
        x = F.interpolate(x, size=(299, 299), mode="bilinear")
        x[:, 0] = x[:, 0] * (0.229 / 0.5) + (0.485 - 0.5) / 0.5
        x[:, 1] = x[:, 1] * (0.224 / 0.5) + (0.456 - 0.5) / 0.5
        x[:, 2] = x[:, 2] * (0.225 / 0.5) + (0.406 - 0.5) / 0.5
        return blocks(x).reshape(x.shape[0], -1)

    inception = inception or forward_inception

    gt = torch.stack([t(Image.open(f).convert("RGB")) for f in gt_files])
    pred = torch.stack([torch.from_numpy(imread(f)).permute(2, 0, 1).float() / 255.0 for f in pred_files])
    pred = F.interpolate(pred, tuple(gt.shape[2:]), mode="bicubic", antialias=True)
    pred = (pred.float() * 255.0).clamp(0, 255).to(dtype=torch.uint8).to(torch.float32) / 255.0
    out = inception(pred.clone()).numpy()
    lp = lpips_model(pred, gt, normalize=True).reshape(len(pred), -1).numpy()
    ssim, ssim_256 = [], []
    for g, p in zip(gt.numpy(), pred.numpy()):
        ssim.append(structural_similarity(g, p, data_range=1, win_size=51, channel_axis=0))
        g2, p2 = g * 255.0, p * 255.0
        ssim_256.append(structural_similarity(g2, p2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                              channel_axis=0, data_range=p2.max() - p2.min()))
    real = torch.stack([t(Image.open(f).convert("RGB")) for f in real_files])
    gt_out = inception(real.clone()).numpy()
    mu1, sigma1 = np.mean(gt_out, axis=0), np.cov(gt_out, rowvar=False)
    mu2, sigma2 = np.mean(out, axis=0), np.cov(out, rowvar=False)
    fid = FID.calculate_frechet_distance(mu1, sigma1, mu2, sigma2)
    return {"fid": float(fid), "lpips": float(np.mean(lp)), "ssim": float(np.mean(ssim)), "ssim_256": float(np.mean(ssim_256))}


# --------------------------------------------------------------------------- PATN (DeepFashion)


def add_bounding(image, bound=40):
    h, w, c = image.shape
    out = (np.ones((h, w + bound * 2, c)) * 255).astype(np.uint8)
    out[:, bound:bound + w] = image
    return out


def patn_ssim(generated, reference):
    """getMetrics_fashion.ssim_score on addBounding'd uint8 images."""
    return float(np.mean([compare_ssim(add_bounding(r), add_bounding(g), gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False,
                                       data_range=add_bounding(g).max() - add_bounding(g).min())
                          for r, g in zip(reference, generated)]))


def annotations_yx(csv_path) -> dict[str, np.ndarray]:
    """name -> (y, x) [18, 2] from a canonical annotation CSV (load_pose_cords_from_strings)."""
    import pandas as pd

    df = pd.read_csv(csv_path, sep=":")
    return {r["name"]: np.stack([json.loads(r["keypoints_y"]), json.loads(r["keypoints_x"])], 1).astype(float)
            for _, r in df.iterrows()}
