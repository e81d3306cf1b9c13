"""Training learns: a tiny U-Net trained through fit_model on an easy seeded task (bright discs on a
noisy background) segments a scan it never saw; the same run with a learning rate of ~0 does not."""
from __future__ import annotations

import numpy as np
import pytest

from bone_avizo.config import FitConfig, PredictConfig
from bone_avizo.fit import fit_model
from bone_avizo.models import load_model
from bone_avizo.predict import predict_volume

SHAPE = (4, 64, 64)  # (z, y, x)
# one epoch of 40 steps at a constant learning rate; batches of 4 slices x 2 patches of 32 px
TINY = dict(encoder_depth=3, decoder_channels=(16, 8, 8), patch_size=32, batch_size=4, patches_per_slice=2,
            steps_per_epoch=40, epochs=1, val_fraction=0.34, val_slices=2, plot=False, seed=0)


def discs(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8, labels uint8), both (z, y, x): six discs (label 1, grey 160) through every slice
    on a background of grey 60, with Gaussian noise of sd 15."""
    rng = np.random.default_rng(seed)
    _, y, x = np.mgrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]]
    labels = np.zeros(SHAPE, np.uint8)
    for _ in range(6):
        cy, cx, radius = rng.uniform(8, 56), rng.uniform(8, 56), rng.uniform(4, 10)
        labels[(y - cy) ** 2 + (x - cx) ** 2 < radius ** 2] = 1
    image = (60 + 100 * labels + rng.normal(0, 15, SHAPE)).clip(1, 255).astype(np.uint8)
    return image, labels


def mean_iou(pred: np.ndarray, ref: np.ndarray) -> float:
    """Mean over classes 0 and 1 of |pred = k and ref = k| / |pred = k or ref = k|."""
    return float(np.mean([((pred == k) & (ref == k)).sum() / ((pred == k) | (ref == k)).sum() for k in (0, 1)]))


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> list[tuple]:
    folder = tmp_path_factory.mktemp("discs")
    pairs = []
    for seed in range(3):
        image, labels = discs(seed)
        np.save(folder / f"scan{seed}.npy", image)
        np.save(folder / f"scan{seed}_labels.npy", labels)
        pairs.append((folder / f"scan{seed}.npy", folder / f"scan{seed}_labels.npy"))
    return pairs


@pytest.mark.parametrize("lr,learns", [(1e-2, True), (1e-9, False)], ids=["lr 1e-2", "lr ~0 (control)"])
def test_a_tiny_network_learns_an_easy_task(scans, tmp_path, lr, learns):
    result = fit_model(scans, FitConfig(**TINY, lr=lr, min_lr=0.0), output=tmp_path / "discs.safetensors")
    image, truth = discs(seed=99)  # a scan neither training nor validation saw
    labels = predict_volume(image, load_model(result.model_path), PredictConfig(backend="torch")).labels.array
    score = mean_iou(labels, truth)
    if learns:
        assert score > 0.9 and result.best_score > 0.9, (score, result.best_score)
    else:
        assert score < 0.6 and result.best_score < 0.6, (score, result.best_score)
