"""The ONNX export cache: where it is, its size cap with least-recently-used eviction, `cache list|clear`."""
from __future__ import annotations

import copy
import os

import pytest
import torch

from bone_avizo.errors import ConfigError
from bone_avizo.models import onnx_cache
from bone_avizo.models.onnx_cache import cache_entries, cache_limit_bytes, cached_onnx, evict, weights_digest
from bone_avizo.standalone.__main__ import main


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BONE_AVIZO_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("BONE_AVIZO_CACHE_MB", raising=False)
    folder = tmp_path / "cache" / "onnx"
    folder.mkdir(parents=True)
    return folder


def _file(folder, name, size, used):
    path = folder / name
    path.write_bytes(b"x" * size)
    os.utime(path, (used, used))
    return path


def test_least_recently_used_files_go_first_and_the_one_in_use_stays(cache):
    old, middle, new = (_file(cache, f"{n}.onnx", 400, t) for n, t in (("old", 1000), ("middle", 2000), ("new", 3000)))
    stray = _file(cache, "gone.onnx.partial", 100, 500)
    assert [e.path for e in cache_entries()] == [new, middle, old, stray]
    assert evict(old, limit=900) == 500  # the partial leftover and "middle", not "old" (in use)
    assert sorted(p.name for p in cache.iterdir()) == ["new.onnx", "old.onnx"]
    assert evict(new, limit=0) == 400 and [p.name for p in cache.iterdir()] == ["new.onnx"]


def test_the_limit_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("BONE_AVIZO_CACHE_MB", raising=False)
    assert cache_limit_bytes() == 1_024_000_000
    monkeypatch.setenv("BONE_AVIZO_CACHE_MB", "2.5")
    assert cache_limit_bytes() == 2_500_000
    monkeypatch.setenv("BONE_AVIZO_CACHE_MB", "lots")
    with pytest.raises(ConfigError) as info:
        cache_limit_bytes()
    assert str(info.value) == ("environment variable BONE_AVIZO_CACHE_MB='lots' is not a size in megabytes; give "
                               "a number >= 0 (e.g. BONE_AVIZO_CACHE_MB=500), or unset it for 1024")


def test_an_export_is_reused_marked_used_and_the_cache_bounded(cache, monkeypatch):
    exported = []

    def fake_export(module, path, *, in_channels, overwrite):
        exported.append(path)
        path.write_bytes(b"o" * 300)
        return path
    monkeypatch.setattr("bone_avizo.models.onnx_export.export_onnx", fake_export)
    monkeypatch.setenv("BONE_AVIZO_CACHE_MB", "0.0005")  # 500 bytes: one export fits
    first, second = torch.nn.Conv2d(1, 2, 1), torch.nn.Conv2d(1, 3, 1)
    a = cached_onnx(first, 1)
    os.utime(a, (1000, 1000))
    assert cached_onnx(first, 1) == a and len(exported) == 1 and a.stat().st_atime > 1000
    b = cached_onnx(second, 1)
    assert len(exported) == 2 and b.is_file() and not a.exists()


class _Doubled(torch.nn.Conv2d):
    def forward(self, x):
        return 2 * super().forward(x)


def test_a_changed_network_with_the_same_weights_is_exported_again(cache, monkeypatch):
    monkeypatch.setattr("bone_avizo.models.onnx_export.export_onnx",
                        lambda module, path, *, in_channels, overwrite: path.write_bytes(b"o") and path)
    torch.manual_seed(0)
    plain = torch.nn.Conv2d(1, 2, 1)
    doubled = _Doubled(1, 2, 1)
    doubled.load_state_dict(plain.state_dict())
    assert weights_digest(plain) == weights_digest(doubled)
    assert cached_onnx(plain, 1) != cached_onnx(doubled, 1)
    assert cached_onnx(copy.deepcopy(plain), 1) == cached_onnx(plain, 1)


def test_cache_list_and_clear(cache, capsys):
    _file(cache, "abc_1ch.onnx", 2_000_000, 1_700_000_000)
    assert main(["cache", "list"]) == 0
    out = capsys.readouterr().out
    assert f"{cache}: 1 file(s), 2.0 MB of at most 1024 MB" in out and "abc_1ch.onnx" in out
    assert main(["cache", "clear"]) == 0
    assert capsys.readouterr().out == f"removed 1 file(s), 2.0 MB, from {cache}\n"
    assert list(cache.iterdir()) == []
    assert onnx_cache.clear_cache() == (0, 0)
