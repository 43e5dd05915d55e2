"""Evaluation metrics of the Market-1501 pose-transfer protocol: the one place that defines them.

Pairs are (real target x_b, generated x̂_b), uint8 RGB images of the same size (128x64 on
Market-1501); keypoints are the TARGET pose, OpenPose-18 (x, y) pixels, -1 missing.

SSIM (ssim.py)
    Gaussian-weighted SSIM, sigma 1.5, window truncated at 3.5 sigma (11 taps), population
    (co)variances (use_sample_covariance=False), K1 = 0.01, K2 = 0.03, on the 3 RGB channels
    of the uint8 images (mean over channels and over pixels >= 5 px from the border),
    data_range = max - min of the GENERATED image (all channels); mean over pairs. Equal to
    skimage.metrics.structural_similarity(real, gen, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, channel_axis=2, data_range=gen.max() - gen.min()), the
    call of the original evaluation (compare_ssim(target, generated, ...)); the formula is
    symmetric, only data_range says which image is "generated".
mask-SSIM
    SSIM of (real * M, generated * M), M the protocol person mask of the target keypoints
    (masks.py: 4-px-half-width rectangles along 23 connections + 4-px discs at the joints,
    then a 5x5 closing); data_range from the masked generated image. Pairs whose target has
    no joint are left out (NaN per pair).
L1 / masked L1 (pixel.py)
    mean |real - generated| / 255 over pixels and channels ([0, 1] scale; the original
    script used the [-1, 1] scale, i.e. twice our value). Masked L1: the same sum over the
    mask's pixels divided by (mask pixels x 3).
FID (inception.py)
    Frechet distance (float64, scipy.linalg.sqrtm) between Gaussians fitted to Inception-v3
    pool3 features (2048-d) of the generated images and of the REFERENCE SET = the real
    targets of the evaluated pairs; images resized to 299x299 (bilinear) and mapped to
    [-1, 1]. Comparable with published numbers only with the FID Inception weights
    (pt_inception-2015-12-05, 1008 classes) and on the 12,000 test pairs: FID depends on the
    reference set and on the number of images.
IS / mask-IS
    Inception score exp(E KL(p(y|x) || p(y))) of the softmax of the Inception logits, over
    10 equal splits (mean and std); mask-IS on the masked generated images.
LPIPS (lpips.py)
    LPIPS v0.1 with AlexNet features, per pair, mean over pairs (lower is better).
DS (detection.py)
    mean over generated images of the highest person confidence of the YOLO pose model's
    boxes (0 when none). The papers used SSD: not comparable with their DS.
PCKh@0.5 (detection.py)
    YOLO pose keypoints on the generated image (OpenPose-18) vs the target keypoints;
    threshold 0.5 x head size, head size = larger side of the bbox of the target's present
    head points (nose, neck, eyes, ears; >= 2 needed). Pooled over all target joints.
    pckh_real: the same for the real targets (an upper bound for the generator).

Unavailable metrics (no weights offline, no keypoints) are reported as None with a
`<metric>_reason` string, never as a made-up value.

Modules: ssim, masks, pixel, inception, lpips, detection, scoring (import them directly:
`from pipeline.metrics import ssim` gives the module, whose function is `ssim.ssim`).
"""
