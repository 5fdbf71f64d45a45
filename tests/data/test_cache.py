"""The disk cache of decoded splits: built once, atomic, keyed by the files, and a drop-in for arrays in memory."""

import os

import numpy as np
import torch
import pytest

from lungaudit.data import cache
from lungaudit.data.arrays import apply_lung_mask, dilate, load_arrays
from lungaudit.data.layouts import load_dataset
from lungaudit.data.lazy import RowView, take_rows


@pytest.fixture()
def in_tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LUNGAUDIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _samples(root, n=10):
    return load_dataset(root).samples[:n]


def test_cached_split_matches_the_in_memory_decode(tiny_synth, in_tmp_cache):
    samples = _samples(tiny_synth)
    mem, disk = load_arrays(samples, 48), cache.cached_arrays(samples, 48, num_workers=0)
    assert isinstance(disk.images, RowView) and disk.images.shape == mem.images.shape
    assert np.abs(np.asarray(disk.images) - mem.images).max() <= 0.5 / 255 + 1e-6  # uint8 steps
    np.testing.assert_array_equal(np.asarray(disk.masks), mem.masks)
    np.testing.assert_array_equal(disk.has_mask, mem.has_mask)
    # the helpers the stages use give the same results on views as on arrays
    np.testing.assert_array_equal(np.asarray(dilate(disk.masks, 2)), dilate(mem.masks, 2))
    masked = apply_lung_mask(disk.images, dilate(disk.masks, 2), 0.0)
    assert isinstance(masked, RowView)
    np.testing.assert_allclose(masked[3], apply_lung_mask(np.asarray(disk.images[3]), dilate(mem.masks[3], 2), 0.0))
    idx = np.array([7, 2, 2])
    np.testing.assert_array_equal(np.asarray(take_rows(disk.masks, idx)), mem.masks[idx])
    np.testing.assert_array_equal(disk.images[-1], disk.images[9])
    np.testing.assert_array_equal(disk.images[2:5][:, None].shape, (3, 1, 48, 48))


def test_built_once_and_keyed_by_the_files(tiny_synth, in_tmp_cache, monkeypatch):
    samples = _samples(tiny_synth, 6)
    first = cache.cached_arrays(samples, 32).store
    monkeypatch.setattr(cache, "_decode_split", lambda *a, **k: pytest.fail("rebuilt a finished cache"))
    assert cache.cached_arrays(samples, 32).store == first  # reused
    monkeypatch.undo()
    monkeypatch.setenv("LUNGAUDIT_CACHE", str(in_tmp_cache))
    assert cache.cached_arrays(samples, 40).store != first  # another size
    st = os.stat(samples[0].path)
    os.utime(samples[0].path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # an edited file
    try:
        assert cache.cached_arrays(samples, 32).store != first
    finally:
        os.utime(samples[0].path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_half_built_cache_is_never_used(tiny_synth, in_tmp_cache, monkeypatch):
    samples = _samples(tiny_synth, 4)
    real = cache._decode_split

    def crash(tmp, *args):
        real(tmp, *args)
        raise KeyboardInterrupt("killed before the rename")

    monkeypatch.setattr(cache, "_decode_split", crash)
    with pytest.raises(KeyboardInterrupt):
        cache.cached_arrays(samples, 32)
    folder = cache.split_cache_dir(samples, 32, None)
    assert not folder.exists() and not list(folder.parent.glob(f".{folder.name}.tmp-*"))
    monkeypatch.setattr(cache, "_decode_split", real)
    assert cache.cached_arrays(samples, 32).store == folder


def test_an_unreadable_image_names_the_file(tmp_path, in_tmp_cache):
    from lungaudit.data.imageio import ImageReadError
    from lungaudit.data.records import Sample

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match="bad.png"):
        cache.cached_arrays([Sample(path=bad, label="Normal")], 32)


def test_auto_goes_to_disk_for_large_sets():
    assert cache.resolve_cache_mode("auto", 1_000, 128) == "memory"
    assert cache.resolve_cache_mode("auto", 400_000, 128) == "disk"
    assert cache.resolve_cache_mode("memory", 400_000, 128) == "memory"
    with pytest.raises(ValueError, match="data.cache"):
        cache.resolve_cache_mode("ram", 1, 1)


def test_missing_masks_are_predicted_into_the_cache(tiny_synth, tiny_run, in_tmp_cache):
    """The U-Net fills missing masks batch by batch into a file; the same masks as in memory."""
    from dataclasses import replace

    from lungaudit.data.arrays import Arrays
    from lungaudit.runs.checkpoint import load_checkpoint
    from lungaudit.runs.restore import restore
    from lungaudit.training.evaluate import fill_missing_masks

    samples = [replace(s, mask_path=None) if i % 3 == 0 else s for i, s in enumerate(_samples(tiny_synth, 9))]
    disk = cache.cached_arrays(samples, 64)
    ckpt = load_checkpoint(tiny_run.run_dir / "weights" / "seg_best.pt", kind="seg", map_location="cpu")
    segmenter = restore(ckpt, torch.device("cpu"))
    filled = fill_missing_masks(disk, segmenter, 64, "test")
    assert isinstance(filled, RowView)
    mem = Arrays(disk.samples, np.asarray(disk.images), np.asarray(disk.masks), disk.has_mask)
    np.testing.assert_array_equal(np.asarray(filled), fill_missing_masks(mem, segmenter, 64, "test"))
    assert fill_missing_masks(cache.cached_arrays(_samples(tiny_synth, 9), 64), None, 64, "test").shape == (9, 64, 64)
