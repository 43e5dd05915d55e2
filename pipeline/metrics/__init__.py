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
FID (inception.py, computed by torch-fidelity 0.4.0)
    Frechet distance between Gaussians fitted (float64 mean and covariance) to the pool3
    features (2048-d) of the generated images and of the REFERENCE SET = the real targets of
    the evaluated pairs; the library's fid_statistics_to_metric (trace of the square root
    from the eigenvalues of S1 S2). Features from torch-fidelity's InceptionV3: the 2015
    TensorFlow graph, uint8 images resized to 299x299 with TF1's bilinear resize
    (align_corners=False, no half-pixel centres), scaled (x - 128) / 128. Comparable with
    published numbers only with its weights (evaluate.inception_weights: inception_fid) and on
    the 12,000 test pairs: FID depends on the reference set and on the number of images.
IS / mask-IS (the same network)
    Inception score exp(E KL(p(y|x) || p(y))), p = softmax of the logits WITHOUT the fc bias
    (as the OpenAI code the papers ran), over 10 splits in order, no shuffling, boundaries
    i*N//10 (fewer splits when N < 10); mean and std over the splits (the library's
    isc_features_to_metric). mask-IS: the same on the masked generated images.
LPIPS (lpips.py, computed by the lpips 0.1.4 package)
    lpips.LPIPS(net='alex', version='0.1') on the pair mapped to [-1, 1], at native size:
    torchvision AlexNet trunk (evaluate.alexnet_weights) and the v0.1 linear layers
    (evaluate.lpips_weights); per pair, mean over pairs (lower is better).
DS (detection.py)
    mean over generated images of the highest person confidence of the YOLO pose model's
    boxes (0 when none). The papers used SSD: not comparable with their DS.
PCKh@0.5 (detection.py)
    YOLO pose keypoints on the generated image (OpenPose-18) vs the target keypoints;
    threshold 0.5 x head size, head size = larger side of the bbox of the target's present
    head points (nose, neck, eyes, ears; >= 2 needed). Pooled over all target joints.
    pckh_real: the same for the real targets (an upper bound for the generator).

Weights are names or local files resolved by pipeline.core.weights. Unavailable metrics (no
weights offline, a null param, no keypoints) are reported as None with a `<metric>_reason`
string, never as a made-up value.

Modules: ssim, masks, pixel, inception, lpips, detection, scoring (import them directly:
`from pipeline.metrics import ssim` gives the module, whose function is `ssim.ssim`).
"""
