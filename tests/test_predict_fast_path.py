"""The fast paths of DLPred: lookup-table normalisation, per-pass argmax, reduced-precision weights,
torch.compile, running out of GPU memory, and GPU-sized blocks; each checked against the plain path."""
import logging

import numpy as np
import pytest
import tifffile
import torch

from bone_avizo.config import PredictConfig
from bone_avizo.data.normalize import NormStats, index_dtype, lookup_table, normalize
from bone_avizo.errors import ConfigError
from bone_avizo.predict import predict_volume
from bone_avizo.predict.backends import TorchBackend
from bone_avizo.predict.engine import Normaliser, labels_from_scores
from bone_avizo.predict.tiling import Tiler
from fakes import PointwiseNet, fake_loaded, pointwise_reference

STATS = NormStats(mean=1234.5, std=321.7, minimum=3.0, maximum=60000.0, count=10)
SMALL_INTS = [np.uint8, np.int8, np.uint16, np.int16]


def every_value(dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.arange(info.min, info.max + 1, dtype=np.int64).astype(dtype).reshape(1, 1, -1)


@pytest.mark.parametrize("mode", ["zscore", "minmax"])
@pytest.mark.parametrize("dtype", SMALL_INTS)
def test_lookup_table_is_bit_identical_to_normalize_for_every_value(dtype, mode):
    raw = every_value(dtype)
    expected = normalize(torch.from_numpy(raw.astype(np.float32)), STATS, mode).numpy()
    table = lookup_table(STATS, mode, dtype)
    assert table.dtype == np.float32
    np.testing.assert_array_equal(np.take(table, raw.view(index_dtype(dtype))), expected)


SIMPLE = NormStats(mean=100.0, std=50.0, minimum=100.0, maximum=300.0, count=10)


@pytest.mark.parametrize("mode,expected", [("zscore", [-2.0, 0.0, 1.0, 3.0, 5.0, 5.0]),
                                           ("minmax", [0.0, 0.0, 0.25, 0.75, 1.0, 1.0])])
def test_normalize_and_its_table_give_the_documented_values(mode, expected):
    """z-score (x - 100) / 50 clipped to [-5, 5]; min-max (x - 100) / 200 clipped to [0, 1]."""
    raw = np.array([0, 100, 150, 250, 400, 1000], np.uint16)
    assert normalize(torch.from_numpy(raw.astype(np.float32)), SIMPLE, mode).tolist() == expected
    assert lookup_table(SIMPLE, mode, np.uint16)[raw].tolist() == expected


def test_other_dtypes_have_no_table():
    assert lookup_table(STATS, "zscore", np.float32) is None and index_dtype(np.uint32) is None


@pytest.mark.parametrize("mode", ["zscore", "minmax"])
@pytest.mark.parametrize("dtype", SMALL_INTS)
def test_cpu_normaliser_is_bit_identical_to_normalize_for_every_value_and_reuses_buffers(dtype, mode):
    """Every 8/16-bit value, laid out as several images of a block, read-only (a lent view): the CPU half
    gives normalize()'s float32 values, and a buffer given back is filled again correctly."""
    values = every_value(dtype).reshape(-1)
    raw = np.resize(values, (3, 2, (len(values) + 5) // 6))
    raw.flags.writeable = False
    expected = normalize(torch.from_numpy(raw.astype(np.float32)), STATS, mode).numpy()
    normaliser = Normaliser(STATS, mode, dtype, torch.device("cpu"))
    assert normaliser.per_pass and normaliser.prepare(raw) is raw  # the reader hands the voxels over
    first = normaliser.normalised(raw)
    np.testing.assert_array_equal(first, expected)
    normaliser.give(first)
    second = normaliser.normalised(raw[::-1].copy())
    assert second.ctypes.data == first.ctypes.data
    np.testing.assert_array_equal(second, expected[::-1])


@pytest.mark.parametrize("dtype", SMALL_INTS + [np.float32, np.uint32])
def test_device_half_of_the_normaliser_equals_the_host_half(dtype):
    """The CUDA route (raw voxels reinterpreted as signed, masked back on the device) gives the same
    values as the CPU route; run here on the CPU by forcing the device route."""
    raw = every_value(dtype) if dtype in SMALL_INTS else np.linspace(1, 60000, 999).astype(dtype).reshape(1, 1, -1)
    host = Normaliser(STATS, "zscore", dtype, torch.device("cpu"))
    device = Normaliser(STATS, "zscore", dtype, torch.device("cpu"))
    device.on_host = False
    on_host = host.normalised(raw) if host.per_pass else host.on_device(host.prepare(raw)).numpy()
    np.testing.assert_array_equal(device.on_device(device.prepare(raw)).numpy(), on_host)


@pytest.mark.parametrize("dtype", [np.int8, np.int16])
def test_signed_scans_predict_exactly(dtype):
    volume = np.random.default_rng(1).integers(-90, 120, (6, 40, 33)).astype(dtype)
    loaded = fake_loaded()
    result = predict_volume(volume, loaded, PredictConfig(backend="torch", tile_size=32, slab_slices=4))
    np.testing.assert_array_equal(result.labels.array, pointwise_reference(volume, loaded))


@pytest.mark.parametrize("classes", [2, 3, 5])
@pytest.mark.parametrize("overwrite", [False, True])
def test_labels_from_scores_is_argmax_with_ties_to_the_lower_class(classes, overwrite):
    scores = torch.randint(0, 3, (2, classes, 9, 11), generator=torch.Generator().manual_seed(classes)).float()
    expected = scores.numpy().argmax(1).astype(np.uint8)  # first maximum: the lower class on ties
    keep = scores.clone()
    labels = labels_from_scores(scores, overwrite=overwrite)
    assert labels.dtype == torch.uint8
    np.testing.assert_array_equal(labels.numpy(), expected)
    if not overwrite:
        assert torch.equal(scores, keep)
    out = torch.full((2, 9, 11), 7, dtype=torch.uint8)
    assert labels_from_scores(keep.clone(), out=out) is out
    np.testing.assert_array_equal(out.numpy(), expected)


def test_labels_from_scores_splits_rows_into_runs_exactly(monkeypatch):
    """Images wider and taller than one run of rows: the same labels as argmax,
    and bfloat16 scores are labelled too."""
    from bone_avizo import kernels
    monkeypatch.setattr(kernels, "LABEL_CHUNK_PIXELS", 64)
    monkeypatch.setattr(kernels, "BLOCK", 64)
    scores = torch.randn(3, 4, 37, 50, generator=torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(labels_from_scores(scores).numpy(), scores.argmax(1).numpy())
    half = scores.bfloat16()
    np.testing.assert_array_equal(labels_from_scores(half).numpy(), half.float().argmax(1).numpy())


class Recording(torch.nn.Module):
    """A PointwiseNet that records its batch sizes and fails above ``limit`` tiles as CUDA would."""

    def __init__(self, limit: int = 10**9):
        super().__init__()
        self.net, self.limit, self.batches = PointwiseNet(1, 3), limit, []

    def forward(self, x):
        self.batches.append(len(x))
        if len(x) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (test)")
        return self.net(x)


@pytest.mark.parametrize("tile", [32, 64])
def test_out_of_memory_halves_the_batch_and_keeps_the_result(tile, caplog):
    images = torch.randn(5, 1, 50, 60)
    reference = Tiler(Recording(), tile=tile, overlap=0.25, blend="gaussian", batch_size=8, num_classes=3)(images)
    failing = Recording(limit=2)
    tiler = Tiler(failing, tile=tile, overlap=0.25, blend="gaussian", batch_size=8, num_classes=3)
    with caplog.at_level(logging.WARNING, logger="bone_avizo"):
        out = tiler(images)
    torch.testing.assert_close(out, reference)
    assert failing.batch_cap == 2 and max(failing.batches[-3:]) <= 2
    assert "out of GPU memory" in caplog.text


def test_a_fixed_batch_predictor_only_sees_full_batches():
    net = Recording()
    net.fixed_batch = True
    images = torch.randn(7, 1, 32, 32)
    out = Tiler(net, tile=32, overlap=0.25, blend="gaussian", batch_size=3, num_classes=3)(images)
    torch.testing.assert_close(out, PointwiseNet(1, 3)(images))
    assert set(net.batches) == {3}


def test_reduced_precision_runs_a_copy_and_leaves_the_callers_weights_in_fp32():
    module = PointwiseNet(1, 3).eval()
    backend = TorchBackend(module, device=torch.device("cpu"), precision="bf16")
    x = torch.randn(2, 1, 32, 32)
    out = backend(x)
    assert out.dtype == torch.float32 and module.weight.dtype == torch.float32
    assert backend.module.weight.dtype == torch.bfloat16 and not backend.autocast
    torch.testing.assert_close(out, module(x), atol=0.1, rtol=0.05)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_predicting_leaves_the_callers_network_as_it_was(backend):
    """Neither backend changes the network it is given: its train/eval mode, the memory layout of its
    weights (channels_last weights had made the caller's own forward passes 10x slower) and its values."""
    loaded = fake_loaded(in_channels=3)  # (K, 3, 1, 1) weights: channels_last changes their strides
    module = loaded.module.train()
    with torch.no_grad():
        module.weight.copy_(torch.randn_like(module.weight))
    before = {k: (v.clone(), v.stride(), v.device) for k, v in module.state_dict().items()}
    volume = np.random.default_rng(6).integers(1, 60000, (3, 20, 24)).astype(np.uint16)
    labels = predict_volume(volume, loaded, PredictConfig(device="cpu", backend=backend)).labels.array
    np.testing.assert_array_equal(labels, pointwise_reference(volume, loaded))
    assert module.training
    for key, value in module.state_dict().items():
        weights, stride, device = before[key]
        assert value.stride() == stride and value.device == device
        torch.testing.assert_close(value, weights, rtol=0, atol=0)


class Fp32Only(PointwiseNet):
    def forward(self, x):
        if x.dtype != torch.float32:
            raise RuntimeError(f"kernel not implemented for {x.dtype}")
        return super().forward(x)


def test_reduced_weights_that_cannot_run_fall_back_to_autocast(caplog):
    module = Fp32Only(1, 3).eval()
    backend = TorchBackend(module, device=torch.device("cpu"), precision="bf16")
    with caplog.at_level(logging.WARNING, logger="bone_avizo"):
        out = backend(torch.randn(2, 1, 32, 32))
    assert backend.autocast and out.shape == (2, 3, 32, 32)
    assert "using bf16 autocast instead" in caplog.text


def test_a_compile_that_fails_falls_back_to_eager(monkeypatch, caplog):
    def broken_compile(module, **kwargs):
        def run(x):
            raise RuntimeError("no C++ compiler found (test)")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    module = PointwiseNet(1, 3).eval()
    backend = TorchBackend(module, device=torch.device("cpu"), precision="fp32", compile=True)
    assert backend.fixed_batch
    x = torch.randn(2, 1, 32, 32)
    with caplog.at_level(logging.WARNING, logger="bone_avizo"):
        out = backend(x)
    torch.testing.assert_close(out, module(x))
    assert not backend.fixed_batch and "torch.compile failed" in caplog.text


def test_compile_on_needs_the_torch_backend():
    with pytest.raises(ConfigError, match="--compile on needs --backend torch"):
        predict_volume(np.ones((3, 32, 32), np.uint8), fake_loaded(),
                       PredictConfig(backend="onnxruntime", compile="on"))


@pytest.mark.slow
def test_compiled_prediction_equals_eager():
    volume = np.random.default_rng(2).integers(0, 4000, (5, 40, 50)).astype(np.uint16)
    loaded = fake_loaded()
    result = predict_volume(volume, loaded, PredictConfig(backend="torch", compile="on", tile_size=32))
    np.testing.assert_array_equal(result.labels.array, pointwise_reference(volume, loaded))


def test_gpu_blocks_are_sized_by_host_and_device_memory(monkeypatch):
    """On a GPU a block holds a few forward passes of images, within a share of the free GPU memory;
    the host only holds raw and label images. Checked with a stand-in for the CUDA queries."""
    from bone_avizo.io.base import ArraySource
    from bone_avizo.predict import engine

    volume = np.zeros((400, 1024, 1024), np.uint16)
    plan = engine._Plan(ArraySource(volume), fake_loaded(), PredictConfig(backend="torch"))
    cpu_images = plan.slab_images(engine.Plane.XY, 2)
    plan.device = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (80 << 30, 96 << 30))
    gpu_images = plan.slab_images(engine.Plane.XY, 2)
    assert plan.batch_size(engine.Plane.XY) == 16  # 16 Mpixel of 1024^2 tiles
    assert gpu_images == engine.BLOCK_PASSES * 16 > 10 * cpu_images
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1 << 30, 8 << 30))
    assert plan.slab_images(engine.Plane.XY, 2) < 16  # a small free GPU memory bounds the block
    assert plan.compile(int(volume.size)) is False  # 0.4 Gvoxel: compiling would not pay back
    assert plan.compile(int(volume.size) * 100) is True


def test_the_first_block_is_one_forward_pass_and_resumed_runs_meet_the_same_blocks():
    from bone_avizo.predict.engine import _blocks

    assert _blocks(100, 30, first=7) == [(0, 7), (7, 37), (37, 67), (67, 97), (97, 100)]
    assert _blocks(100, 30, start=37, first=7) == [(37, 67), (67, 97), (97, 100)]  # resuming after 37 slices
    assert _blocks(100, 30, first=30) == _blocks(100, 30) == [(0, 30), (30, 60), (60, 90), (90, 100)]
    assert _blocks(5, 30, first=7) == [(0, 5)]


def test_progress_moves_after_the_first_forward_pass():
    """The first prediction report comes after one pass of images, not after a whole block."""
    from bone_avizo.predict.engine import PREDICT_UNITS, STATS_UNITS

    volume = np.random.default_rng(3).integers(0, 4000, (40, 32, 32)).astype(np.uint16)
    seen = []
    predict_volume(volume, fake_loaded(), PredictConfig(backend="torch", tile_size=32, batch_size=4, slab_slices=20),
                   progress=lambda done, total, message: seen.append(done))
    stats = 40 * STATS_UNITS["cpu"]
    predicted = [d - stats for d in seen if d > stats]
    assert predicted[0] == 4 * PREDICT_UNITS and predicted[-1] == 40 * PREDICT_UNITS


def test_labels_computed_beside_the_next_pass_are_exact_and_their_errors_stop_the_run(tmp_path, monkeypatch):
    """CPU labels of a forward pass run on a background thread while the next pass runs: many passes per
    block give the exact labels, and a failure there ends the run with its error and no output file."""
    import bone_avizo.predict.engine as engine
    volume = np.random.default_rng(4).integers(1, 60000, (7, 30, 26)).astype(np.uint16)
    loaded = fake_loaded()
    config = PredictConfig(device="cpu", batch_size=1, slab_slices=4)
    result = predict_volume(volume, loaded, config, output=tmp_path / "ok.tif")
    np.testing.assert_array_equal(tifffile.imread(result.output), pointwise_reference(volume, loaded))
    calls = []
    real = engine.labels_from_scores

    def failing(scores, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("argmax failed (test)")
        return real(scores, **kwargs)

    monkeypatch.setattr(engine, "labels_from_scores", failing)
    with pytest.raises(RuntimeError, match="argmax failed"):
        predict_volume(volume, loaded, config, output=tmp_path / "failed.tif")
    assert not list(tmp_path.glob("failed*"))


def test_the_next_pass_is_normalised_beside_the_network_exactly_and_its_errors_stop_the_run(tmp_path, monkeypatch):
    """CPU, 8/16-bit voxels: each pass of a block after its first is normalised on the helper thread while
    the network runs the pass before; the labels stay exact, and a failure there ends the run cleanly."""
    import threading

    import bone_avizo.predict.engine as engine
    volume = np.random.default_rng(5).integers(1, 60000, (9, 30, 26)).astype(np.uint16)
    loaded = fake_loaded()
    config = PredictConfig(device="cpu", batch_size=1, slab_slices=4)
    threads = []
    real = engine.Normaliser.normalised

    def recorded(self, raw):
        threads.append(threading.current_thread().name.startswith("bone_avizo-helper"))
        if len(threads) == 15:
            raise RuntimeError("normalisation failed (test)")
        return real(self, raw)

    monkeypatch.setattr(engine.Normaliser, "normalised", recorded)
    result = predict_volume(volume, loaded, config, output=tmp_path / "ok.tif")
    np.testing.assert_array_equal(tifffile.imread(result.output), pointwise_reference(volume, loaded))
    blocks = engine._blocks(9, 4, first=1)  # (0, 1), (1, 5), (5, 9): the first pass of each on this thread
    assert threads == [False] + [False, True, True, True] * 2 and len(blocks) == 3
    with pytest.raises(RuntimeError, match="normalisation failed"):
        predict_volume(volume, loaded, config, output=tmp_path / "failed.tif")
    assert not list(tmp_path.glob("failed*"))


def test_a_reduced_precision_picks_the_torch_backend_or_is_refused_before_any_work():
    """fp16/bf16 run on the torch backend: the automatic backend picks it; onnxruntime asked for by name
    is refused with one line before the statistics pass reads anything."""
    volume = np.random.default_rng(7).integers(1, 60000, (3, 16, 16)).astype(np.uint16)
    result = predict_volume(volume, fake_loaded(), PredictConfig(device="cpu", precision="bf16"))
    assert result.backend == "torch"
    reports = []
    with pytest.raises(ConfigError) as info:
        predict_volume(volume, fake_loaded(), PredictConfig(device="cpu", precision="fp16", backend="onnxruntime"),
                       progress=lambda done, total, message: reports.append(done))
    assert str(info.value) == ("precision fp16 is available with --backend torch; onnxruntime runs fp32: drop "
                               "--precision or use --backend torch")
    assert reports == []
