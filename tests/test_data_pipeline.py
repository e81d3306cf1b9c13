"""Training data pipeline: scan checks, scan-level splits, crops, 2.5D stacks, augmentation, datasets."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bone_avizo.data.augment import Augmenter, clip_range
from bone_avizo.data.context import context_indices
from bone_avizo.data.datasets import (EpochSampler, PatchDataset, PatchSettings, SliceSet,
                                      collate_patches, steps_for)
from bone_avizo.data.normalize import NormStats
from bone_avizo.data.sampling import SliceReader, SliceRef, crop_positions, evenly_spaced, slices_of
from bone_avizo.data.scans import (ScanSpec, check_patch_fits, discover_scan_folders, open_scans, pair_specs,
                                   resolve_num_classes, scan_name)
from bone_avizo.data.split import fraction_split, kfold_splits, make_split
from bone_avizo.errors import ConfigError, InputFileError, InvalidVolumeError, LabelError, ShapeMismatchError
from bone_avizo.io.base import ArraySource


def _save(path, array):
    np.save(path, array)
    return path


def _scan(tmp_path, name, shape=(5, 40, 48), value=None, labels=None, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(1, 200, shape).astype(np.uint8) if value is None else np.full(shape, value, np.uint8)
    lab = labels if labels is not None else (rng.random(shape) > 0.6).astype(np.uint8)
    return ScanSpec(_save(tmp_path / f"{name}.npy", image), _save(tmp_path / f"{name}_labels.npy", lab), name)


# ---- scans and checks -------------------------------------------------------------------------
def test_nan_voxels_are_refused(tmp_path):
    image = np.ones((5, 40, 48), np.float32)
    image[3, 2, 2] = np.inf
    spec = ScanSpec(_save(tmp_path / "i.npy", image), _save(tmp_path / "l.npy", np.zeros((5, 40, 48), np.uint8)))
    with pytest.raises(InvalidVolumeError, match=r"i contains NaN or infinite values \(the first in slice z=3\)"):
        open_scans([spec])


def test_open_scans_summarises_labels(tmp_path):
    labels = np.zeros((5, 40, 48), np.uint8)
    labels[2, 3:5, 7] = 2
    scan = open_scans([_scan(tmp_path, "a", labels=labels)])[0]
    assert scan.summary.max_label == 2
    assert scan.summary.counts[2] == 2
    assert scan.summary.foreground[0].tolist() == [0, 0, 2, 0, 0]
    assert scan.summary.foreground[1][3] == 1 and scan.summary.foreground[2][7] == 2
    assert scan.stats.count == 5 * 40 * 48


def test_shape_mismatch_is_refused(tmp_path):
    spec = ScanSpec(_save(tmp_path / "i.npy", np.ones((5, 40, 48), np.uint8)),
                    _save(tmp_path / "l.npy", np.zeros((5, 40, 47), np.uint8)))
    with pytest.raises(ShapeMismatchError, match=r"\(5, 40, 48\).*\(5, 40, 47\)"):
        open_scans([spec])


@pytest.mark.parametrize("labels, message", [
    (np.full((5, 40, 48), 0.5, np.float32), "not integers"),
    (np.full((5, 40, 48), -1, np.int16), "negative"),
])
def test_bad_label_values_are_refused(tmp_path, labels, message):
    with pytest.raises(LabelError, match=message):
        open_scans([_scan(tmp_path, "a", labels=labels)])


def test_class_counts_must_agree(tmp_path):
    two = np.zeros((5, 40, 48), np.uint8)
    two[0, 0, 0] = 1
    three = two.copy()
    three[1, 1, 1] = 2
    scans = open_scans([_scan(tmp_path, "a", labels=two), _scan(tmp_path, "b", labels=three)])
    with pytest.raises(LabelError, match="different numbers of classes.*a: 2, b: 3"):
        resolve_num_classes(scans)
    assert resolve_num_classes(scans, num_classes=3) == 3
    with pytest.raises(LabelError, match="exceed the 2 declared"):
        resolve_num_classes(scans, class_names=("bg", "bone"))


def test_a_grey_value_scan_as_labels_is_refused(tmp_path):
    """More classes than max_classes (64) is a grey-value scan given as labels; uint16 beyond 255 always."""
    grey = np.random.default_rng(0).integers(0, 200, (5, 40, 48)).astype(np.uint8)
    scans = open_scans([_scan(tmp_path, "a", labels=grey)])
    with pytest.raises(LabelError, match=r"label volume of scan a \(.*a_labels.npy\) holds 200 distinct values, the "
                                         r"largest 199 \(dtype uint8\).*N at most 64 \(--max-classes\)"):
        resolve_num_classes(scans)
    assert resolve_num_classes(scans, max_classes=200) == 200
    wide = grey.astype(np.uint16) * 10
    with pytest.raises(LabelError, match=r"holds at least \d+ distinct values, the largest 1990 \(dtype uint16\); "
                                         r"labels 0..255 are supported"):
        open_scans([_scan(tmp_path, "b", labels=wide)])


def test_patch_must_fit_and_the_error_suggests_a_size(tmp_path):
    scans = open_scans([_scan(tmp_path, "a", shape=(5, 70, 100))])
    check_patch_fits(scans, 64, [0])
    with pytest.raises(ConfigError, match="--patch-size 64"):
        check_patch_fits(scans, 96, [0])
    with pytest.raises(ConfigError, match="slices are smaller than 32"):
        check_patch_fits(scans, 64, [1])  # xz slices are 5 x 100


def test_pair_specs_and_names(tmp_path):
    with pytest.raises(ConfigError, match="2 image volume.*1 label"):
        pair_specs(["a.npy", "b.npy"], ["c.npy"])
    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
        for name in ("a.tif", "l.tif"):
            (tmp_path / folder / name).write_bytes(b"")
    specs = pair_specs([tmp_path / "x/a.tif", tmp_path / "y/a.tif"], [tmp_path / "x/l.tif", tmp_path / "y/l.tif"])
    assert [s.name for s in specs] == ["a", "a_2"]
    with pytest.raises(InputFileError, match="--val-labels: .*nope.tif does not exist"):
        pair_specs([tmp_path / "x/a.tif"], [tmp_path / "nope.tif"], flags=("--val-images", "--val-labels"))
    folder = tmp_path / "Mouse1" / "_Scan"
    folder.mkdir(parents=True)
    assert scan_name(folder) == "Mouse1"


def test_bone_layout_discovery(tmp_path):
    import tifffile

    for name in ("Rat2", "Mouse1/_Scan"):
        for root in ("images", "masks"):
            folder = tmp_path / root / name
            folder.mkdir(parents=True)
            for z in range(3):
                tifffile.imwrite(folder / f"s{z:03d}.tif", np.full((32, 40), z + 1, np.uint8))
    specs = discover_scan_folders(tmp_path / "images", tmp_path / "masks")
    assert [s.name for s in specs] == ["Mouse1", "Rat2"]
    scans = open_scans(specs)
    assert scans[0].shape == (3, 32, 40)
    (tmp_path / "masks" / "Rat2" / "s000.tif").unlink()
    for f in (tmp_path / "masks" / "Rat2").iterdir():
        f.unlink()
    with pytest.raises(InputFileError, match="no mask folder"):
        discover_scan_folders(tmp_path / "images", tmp_path / "masks")


# ---- splits -----------------------------------------------------------------------------------
def test_fraction_split_is_seeded_and_keeps_one_validation_scan():
    split = fraction_split(5, val_fraction=0.2, seed=3)
    assert len(split.val) == 1 and len(split.train) == 4
    assert split == fraction_split(5, val_fraction=0.2, seed=3)
    assert len(fraction_split(2, val_fraction=0.01).val) == 1
    assert {fraction_split(10, seed=s).val for s in range(6)} != {fraction_split(10, seed=0).val}
    with pytest.raises(ConfigError, match="at least 2 scans"):
        fraction_split(1)


def test_kfold_covers_every_scan_once():
    splits = kfold_splits(7, folds=3, seed=1)
    vals = [i for s in splits for i in s.val]
    assert sorted(vals) == list(range(7))
    for s in splits:
        assert not set(s.train) & set(s.val) and len(s.train) + len(s.val) == 7
    assert make_split(7, folds=3, fold=2, seed=1) == splits[2]
    assert make_split(4, n_explicit_val=1).val == (3,)
    with pytest.raises(ConfigError):
        kfold_splits(2, folds=3)


# ---- crops and 2.5D ---------------------------------------------------------------------------
def test_crops_respect_the_overlap_limit():
    rng = np.random.default_rng(0)
    for _ in range(20):
        corners = crop_positions(200, 150, 64, 4, rng, max_overlap=0.3)
        for i, a in enumerate(corners):
            assert 0 <= a[0] <= 200 - 64 and 0 <= a[1] <= 150 - 64
            for b in corners[:i]:
                inter = max(0, 64 - abs(a[0] - b[0])) * max(0, 64 - abs(a[1] - b[1]))
                assert inter <= 0.3 * 64 * 64
    # a slice the size of the patch allows one position only
    assert crop_positions(64, 64, 64, 4, rng) == [(0, 0)] * 4


def test_foreground_crops_contain_foreground():
    rng = np.random.default_rng(1)
    fg = np.array([[150, 20]])
    corners = crop_positions(200, 200, 32, 4, rng, max_overlap=1.0, foreground=fg, foreground_crops=1.0)
    for y, x in corners:
        assert y <= 150 < y + 32 and x <= 20 < x + 32


@pytest.mark.parametrize("centre,context,expected", [
    (0, 3, [1, 0, 1]), (4, 3, [3, 4, 3]), (2, 3, [1, 2, 3]), (0, 5, [2, 1, 0, 1, 2]), (1, 5, [1, 0, 1, 2, 3]),
    (4, 5, [2, 3, 4, 3, 2]), (3, 1, [3])])
def test_context_mirrors_missing_neighbours_without_repeating_the_edge(centre, context, expected):
    assert context_indices(centre, 5, context).tolist() == expected


def test_image_stack_matches_prediction_context():
    """Stacks along every axis equal numpy's reflect padding (z = -1 -> 1), the rule DLPred uses."""
    vol = np.arange(5 * 8 * 9, dtype=np.float32).reshape(5, 8, 9)
    reader = SliceReader([ArraySource(vol)], [ArraySource(np.zeros_like(vol, np.uint8))], context=5, cache_slices=4)
    for axis in range(3):
        padded = np.pad(vol, [(2, 2) if a == axis else (0, 0) for a in range(3)], mode="reflect")
        for i in range(vol.shape[axis]):
            stack = reader.image_stack(SliceRef(0, axis, i))
            expected = np.moveaxis(np.take(padded, range(i, i + 5), axis=axis), axis, 0)
            np.testing.assert_array_equal(stack, expected)
    first = reader.image_stack(SliceRef(0, 0, 0))[:, 0, 0]
    assert first.tolist() == [144.0, 72.0, 0.0, 72.0, 144.0]  # slices 2, 1, 0, 1, 2 (72 voxels per slice)
    assert len(reader._cache) <= 4


def test_slice_lists_and_even_spacing():
    assert len(slices_of(0, (3, 4, 5), [0, 2])) == 8
    assert evenly_spaced(10, 3) == [0, 4, 9] or evenly_spaced(10, 3) == [0, 5, 9]
    assert evenly_spaced(4, 0) == [0, 1, 2, 3]


# ---- augmentation -----------------------------------------------------------------------------
def test_augmentation_is_seeded_and_keeps_labels_aligned():
    image = torch.arange(2 * 32 * 32, dtype=torch.float32).reshape(2, 32, 32) / 1000
    labels = (image[0] * 1000).long()  # a label equal to the pixel's identity
    aug = Augmenter("zscore", extras=("gamma", "noise", "blur", "scale"))
    seen = set()
    for seed in range(30):
        a_img, a_lab = aug(image.clone(), labels.clone(), np.random.default_rng(seed))
        b_img, b_lab = aug(image.clone(), labels.clone(), np.random.default_rng(seed))
        assert torch.equal(a_img, b_img) and torch.equal(a_lab, b_lab)
        lo, hi = clip_range("zscore")
        assert a_img.min() >= lo and a_img.max() <= hi
        seen.add(a_lab[0, 0].item())
    assert len(seen) > 2  # flips and rotations move corners


def test_geometric_augmentation_moves_image_and_labels_together():
    image = torch.arange(32 * 32, dtype=torch.float32).reshape(1, 32, 32) / 2000
    labels = torch.arange(32 * 32).reshape(32, 32)
    aug = Augmenter("minmax")
    for seed in range(20):
        img, lab = aug(image.clone(), labels.clone(), np.random.default_rng(seed))
        # the intensity steps are affine: the order of values is kept or the image is flat/clipped
        order_img = torch.argsort(img.flatten())
        assert torch.equal(lab.flatten()[order_img], torch.sort(lab.flatten()).values) or img.max() == 1 \
            or img.min() == 0


# ---- datasets ---------------------------------------------------------------------------------
def _tagged_specs(tmp_path, values):
    """Scans whose every voxel equals the scan's tag value (labels 0/1)."""
    specs = []
    for k, v in enumerate(values):
        labels = np.zeros((6, 40, 40), np.uint8)
        labels[:, 10:30, 10:30] = 1
        specs.append(_scan(tmp_path, f"s{k}", shape=(6, 40, 40), value=v, labels=labels))
    return specs


def test_patch_dataset_batches_and_determinism(tmp_path):
    specs = _tagged_specs(tmp_path, [10, 20])
    stats = [NormStats(0.0, 1.0, 0.0, 255.0, 1)] * 2
    settings = PatchSettings(patch_size=32, patches_per_slice=3, context=3, normalization="zscore", seed=7)
    dataset = PatchDataset(specs, stats, settings, augmenter=Augmenter("zscore"))
    refs = slices_of(0, (6, 40, 40), [0]) + slices_of(1, (6, 40, 40), [0])
    sampler = EpochSampler(refs, seed=7, steps=2, batch_size=2)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, sampler=sampler, collate_fn=collate_patches)
    batches = list(loader)
    assert len(batches) == 2
    images, labels = batches[0]
    assert images.shape == (6, 3, 32, 32) and images.dtype == torch.float32
    assert labels.shape == (6, 32, 32) and labels.dtype == torch.int64
    again = list(torch.utils.data.DataLoader(dataset, batch_size=2, sampler=sampler, collate_fn=collate_patches))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(batches, again))
    sampler.set_epoch(1)
    assert [k.ref for k in sampler] != [k.ref for k in EpochSampler(refs, seed=7, steps=2, batch_size=2)]


def test_ranks_share_out_the_epoch():
    refs = slices_of(0, (10, 40, 40), [0])
    keys = [list(EpochSampler(refs, seed=1, steps=3, batch_size=2, rank=r, world_size=2)) for r in range(2)]
    positions = sorted(k.position for ks in keys for k in ks)
    assert positions == list(range(12))
    assert steps_for(10, batch_size=2, world_size=2) == 3
    assert steps_for(10, batch_size=2, steps_per_epoch=7) == 7


def test_no_validation_scan_reaches_training(tmp_path):
    """Tag every voxel with its scan's value; train-side samples must never show a validation tag."""
    values = [11, 22, 33, 44, 55]
    specs = _tagged_specs(tmp_path, values)
    split = make_split(len(specs), val_fraction=0.4, seed=5)
    stats = [NormStats(0.0, 1.0, 0.0, 255.0, 1)] * len(specs)
    settings = PatchSettings(patch_size=32, context=3, normalization="minmax", seed=5)
    # the trainer gives the dataset only the training scans' specs
    train_specs = [specs[i] for i in split.train]
    dataset = PatchDataset(train_specs, stats, settings)
    refs = [r for k in range(len(train_specs)) for r in slices_of(k, (6, 40, 40), [0])]
    seen = set()
    for key in EpochSampler(refs, seed=5, steps=10, batch_size=4):
        images, _ = dataset[key]
        seen |= set(np.unique(np.rint(images.numpy() * 255)).astype(int).tolist())
    assert seen == {values[i] for i in split.train}
    assert not seen & {values[i] for i in split.val}


def test_slice_set_whole_slices_and_fixed_patches(tmp_path):
    specs = _tagged_specs(tmp_path, [100])
    stats = [NormStats(100.0, 10.0, 1.0, 200.0, 1)]
    slices = SliceSet(specs, stats, PatchSettings(patch_size=32, context=3, seed=1))
    image, labels = slices.get(SliceRef(0, 1, 5))
    assert image.shape == (3, 6, 40) and labels.shape == (6, 40)
    assert torch.all(image == 0)
    a = slices.patches(SliceRef(0, 0, 2), 3)
    b = slices.patches(SliceRef(0, 0, 2), 3)
    assert torch.equal(a[1], b[1])
    slices.close()


def test_bounded_source_reopens_and_returns_copies(tmp_path):
    from bone_avizo.data.lazy import BoundedSource

    vol = np.arange(6 * 10 * 12, dtype=np.uint16).reshape(6, 10, 12)
    np.save(tmp_path / "v.npy", vol)
    source = BoundedSource(tmp_path / "v.npy", reopen_bytes=2 * 10 * 12 * 2)
    first = source._inner
    slabs = [source.read_slab(z, z + 1) for z in range(6)]
    assert source._inner is not first
    np.testing.assert_array_equal(np.concatenate(slabs), vol)
    assert all(s.flags.owndata for s in slabs)
    np.testing.assert_array_equal(source.read_plane(2, 3), vol[:, :, 3])
    source.close()
    np.testing.assert_array_equal(source.read_region(slice(1, 3), slice(0, 4), slice(5, 6)), vol[1:3, 0:4, 5:6])


def test_worker_processes_give_the_same_batches(tmp_path):
    specs = _tagged_specs(tmp_path, [10, 20])
    stats = [NormStats(0.0, 1.0, 0.0, 255.0, 1)] * 2
    settings = PatchSettings(patch_size=32, patches_per_slice=2, context=3, normalization="minmax", seed=3)
    dataset = PatchDataset(specs, stats, settings, augmenter=Augmenter("minmax", extras=("noise", "scale")))
    refs = slices_of(0, (6, 40, 40), [0]) + slices_of(1, (6, 40, 40), [0])
    sampler = EpochSampler(refs, seed=3, steps=3, batch_size=2)
    batches = {}
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(dataset, batch_size=2, sampler=sampler, collate_fn=collate_patches,
                                             num_workers=workers)
        batches[workers] = list(loader)
    for (a_img, a_lab), (b_img, b_lab) in zip(batches[0], batches[2]):
        assert torch.equal(a_img, b_img) and torch.equal(a_lab, b_lab)
    assert len(batches[2]) == 3
