"""``lungaudit plant``: shortcuts planted on real-shaped radiographs, off the lungs, with clean twins.

Inputs are generated here (96-128 px grey "radiographs" with two elliptic lungs and ``_0``/``_1``
file names), so the tests run anywhere; one extra test uses the real Shenzhen sample when present.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from lungaudit.data.imageio import read_mask
from lungaudit.data.layouts import load_dataset
from lungaudit.data.plant import KIND_NAMES, KINDS, MANIFEST_COLUMNS, PlantConfig, PlantError, plant
from lungaudit.data.plant.glyphs import available_fonts, render_text
from lungaudit.data.plant.inputs import safe_stem
from lungaudit.data.plant.labels import LabelSpecError, parse_suffix_labels

# ../shared beside the checkout; a worktree sits one level deeper, so look in every ancestor.
_SAMPLE = "shared/realsample/shenzhen"
SHENZHEN = next(
    (p / _SAMPLE for p in Path(__file__).resolve().parents[2].parents if (p / _SAMPLE).is_dir()),
    Path(__file__).resolve().parents[2].parent / _SAMPLE,
)
N_PER_CLASS = 40
SUFFIXES = "0=Normal,1=TB"


def _radiograph(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A grey film (dark background, bright body, darker lungs, noise) and its 0/255 lung mask."""
    yy, xx = np.mgrid[0:h, 0:w]
    body = np.exp(-(((xx - w / 2) / (0.42 * w)) ** 6)) * (0.55 + 0.35 * yy / h)
    mask = np.zeros((h, w), np.uint8)
    for cx in (0.3, 0.7):
        axes = (int(0.13 * w * rng.uniform(0.9, 1.1)), int(0.28 * h * rng.uniform(0.9, 1.1)))
        cv2.ellipse(mask, (int(cx * w), int(0.5 * h)), axes, 0, 0, 360, 255, -1)
    img = 255 * (0.05 + body - 0.25 * (mask > 0)) + rng.normal(0, 6, (h, w))
    return np.clip(img, 0, 255).astype(np.uint8), mask


def _write(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), arr), path


def make_real_dir(root: Path, n_per_class: int = N_PER_CLASS, size: tuple[int, int] = (96, 96), seed: int = 0) -> Path:
    """``root/images/CXR_####_{0,1}.png`` + ``root/masks/`` of the same names."""
    rng = np.random.default_rng(seed)
    for i in range(2 * n_per_class):
        img, mask = _radiograph(rng, *size)
        name = f"CXR_{i:04d}_{i % 2}.png"
        _write(root / "images" / name, img)
        _write(root / "masks" / name, mask)
    return root


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def _box(text: str) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (int(v) for v in text.split())
    return x0, y0, x1, y1


def _gray(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None and img.dtype == np.uint8 and img.ndim == 2, path
    return img


def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def real_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_real_dir(tmp_path_factory.mktemp("real"))


@pytest.fixture(scope="module")
def planted(real_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("planted") / "out"
    plant(real_dir, out, PlantConfig(rate=0.9, seed=3), suffix_labels=SUFFIXES)
    return out


# ----------------------------------------------------------------------------- geometry and twins


def test_every_image_gets_one_cue_inside_the_image_and_off_the_dilated_lungs(planted: Path, real_dir: Path) -> None:
    rows = _rows(planted)
    assert len(rows) == 2 * N_PER_CLASS and all(r["shortcut"] in KIND_NAMES for r in rows)
    cfg = PlantConfig()
    for r in rows:
        img = _gray(planted / r["path"])
        x0, y0, x1, y1 = _box(r["shortcut_box"])
        assert 0 <= x0 < x1 <= img.shape[1] and 0 <= y0 < y1 <= img.shape[0], r
        lungs = _gray(real_dir / r["origin"].replace("images/", "masks/")) > 0
        rad = max(1, round(cfg.margin_frac * min(img.shape)))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * rad + 1, 2 * rad + 1))
        guarded = cv2.dilate(lungs.astype(np.uint8), kernel).astype(bool)
        assert not guarded[y0:y1, x0:x1].any(), f"{r['path']}: cue box touches the lungs"


def _outside(shape: tuple[int, ...], box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    keep = np.ones(shape, bool)
    keep[y0:y1, x0:x1] = False
    return keep


def test_twins_equal_the_input_and_differ_from_the_image_only_inside_the_box(planted: Path, real_dir: Path) -> None:
    test = [r for r in _rows(planted) if r["split"] == "test"]
    assert test and all(r["twin"] for r in test)
    for r in test:
        img, twin = _gray(planted / r["path"]), _gray(planted / r["twin"])
        assert np.array_equal(twin, _gray(real_dir / r["origin"])), "the twin is the untouched input"
        box = _box(r["shortcut_box"])
        out = _outside(img.shape, box)
        assert np.array_equal(img[out], twin[out]), f"{r['path']} differs from its twin outside {box}"
        x0, y0, x1, y1 = box
        assert (img[y0:y1, x0:x1] != twin[y0:y1, x0:x1]).any()


def test_train_and_val_images_change_only_inside_their_box(planted: Path, real_dir: Path) -> None:
    for r in (r for r in _rows(planted) if r["split"] != "test"):
        assert r["twin"] == ""
        img, orig = _gray(planted / r["path"]), _gray(real_dir / r["origin"])
        assert img.shape == orig.shape
        out = _outside(img.shape, _box(r["shortcut_box"]))
        assert np.array_equal(img[out], orig[out])


def test_masks_are_byte_identical_copies(planted: Path, real_dir: Path) -> None:
    for r in _rows(planted):
        src = real_dir / r["origin"].replace("images/", "masks/")
        assert (planted / r["mask"]).read_bytes() == src.read_bytes()


# ----------------------------------------------------------------------------- correlation


def _agree(rows: list[dict[str, str]]) -> float:
    return sum(r["shortcut_class"] == r["label"] for r in rows) / len(rows)


@pytest.mark.parametrize("rate", [0.9, 0.6])
def test_cue_agrees_with_the_label_at_the_rate_in_train_val_and_is_independent_in_test(tmp_path: Path, real_dir: Path, rate: float) -> None:
    out = tmp_path / "out"
    plant(real_dir, out, PlantConfig(rate=rate, seed=1), suffix_labels=SUFFIXES)
    rows = _rows(out)
    for split in ("train", "val", "test"):
        for label in ("Normal", "TB"):
            cell = [r for r in rows if r["split"] == split and r["label"] == label]
            assert cell, (split, label)
            # Counts are allocated exactly, so the only slack is rounding to whole images.
            want = 0.5 if split == "test" else rate
            assert abs(_agree(cell) - want) <= 0.5 / len(cell) + 1e-9, (split, label, _agree(cell))
    # Per kind the kinds are dealt independently of agreement: a binomial tolerance (3 standard errors).
    fit = [r for r in rows if r["split"] != "test"]
    for kind in KIND_NAMES:
        sub = [r for r in fit if r["shortcut"] == kind]
        tol = 3 * math.sqrt(rate * (1 - rate) / len(sub)) + 1 / len(sub)
        assert abs(_agree(sub) - rate) <= tol, (kind, _agree(sub), len(sub))


def test_kinds_follow_their_weights_and_the_label_does_not_choose_the_kind(planted: Path) -> None:
    rows = _rows(planted)
    total = sum(KINDS[k].weight for k in KIND_NAMES)
    counts = Counter(r["shortcut"] for r in rows)
    for k in KIND_NAMES:
        assert abs(counts[k] - len(rows) * KINDS[k].weight / total) <= 2, counts
    for label in ("Normal", "TB"):
        per = Counter(r["shortcut"] for r in rows if r["label"] == label)
        assert abs(per["text"] - counts["text"] / 2) <= 2, (label, per)


def test_the_cue_position_carries_its_class(planted: Path) -> None:
    """Two classes: every cue of class 0 is centred in the left half of the film, class 1 in the right."""
    for r in _rows(planted):
        x0, _, x1, _ = _box(r["shortcut_box"])
        w = _gray(planted / r["path"]).shape[1]
        if r["shortcut"] == "band":
            assert (x0 == 0) if r["shortcut_class"] == "Normal" else (x1 == w), r
        else:
            centre = (x0 + x1) / 2
            assert (centre < w / 2) if r["shortcut_class"] == "Normal" else (centre > w / 2), r


# ----------------------------------------------------------------------------- determinism and layout


def test_same_seed_is_byte_identical_and_another_seed_is_not(tmp_path: Path, real_dir: Path, planted: Path) -> None:
    again = tmp_path / "again"
    plant(real_dir, again, PlantConfig(rate=0.9, seed=3), suffix_labels=SUFFIXES)
    a, b = _digests(planted), _digests(again)
    a.pop("problems.csv"), b.pop("problems.csv")
    assert a == b
    other = tmp_path / "other"
    plant(real_dir, other, PlantConfig(rate=0.9, seed=4), suffix_labels=SUFFIXES)
    assert _digests(other)["manifest.csv"] != a["manifest.csv"]


def test_rerun_into_the_same_folder_replaces_it_exactly(tmp_path: Path, real_dir: Path, planted: Path) -> None:
    out = tmp_path / "out"
    plant(real_dir, out, PlantConfig(rate=0.9, seed=7, test_frac=0.5), suffix_labels=SUFFIXES)
    plant(real_dir, out, PlantConfig(rate=0.9, seed=3), suffix_labels=SUFFIXES)
    a, b = _digests(out), _digests(planted)
    a.pop("problems.csv"), b.pop("problems.csv")
    assert a == b, "stale twins of the earlier run must be gone"


def test_refuses_a_non_empty_folder_it_did_not_write(tmp_path: Path, real_dir: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(PlantError, match="not empty"):
        plant(real_dir, tmp_path, suffix_labels=SUFFIXES)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_manifest_loads_with_load_dataset_and_twins_resolve(planted: Path) -> None:
    ds = load_dataset(planted)
    assert ds.layout == "manifest" and ds.class_names == ("Normal", "TB") and ds.problems == []
    rows = {(planted / r["path"]).resolve(): r for r in _rows(planted)}
    assert list(_rows(planted)[0]) == list(MANIFEST_COLUMNS)
    for s in ds.samples:
        r = rows[s.path]
        assert s.split == r["split"] and s.label == r["label"] and s.mask_path is not None
        read_mask(s.mask_path, _gray(s.path).shape)
        if s.split == "test":
            assert s.extra["twin"] is not None and Path(s.extra["twin"]).is_file()
        else:
            assert s.extra["twin"] is None


def test_images_keep_their_size_on_non_square_films(tmp_path: Path) -> None:
    real = make_real_dir(tmp_path / "real", n_per_class=6, size=(128, 104))
    result = plant(real, tmp_path / "out", suffix_labels=SUFFIXES)
    assert result.unplaced == 0
    for r in result.rows:
        assert _gray(tmp_path / "out" / r["path"]).shape == (128, 104)


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_each_kind_alone_plants_valid_cues(tmp_path: Path, kind: str) -> None:
    real = make_real_dir(tmp_path / "real", n_per_class=4, size=(112, 112), seed=5)
    result = plant(real, tmp_path / "out", PlantConfig(kinds=(kind,)), suffix_labels=SUFFIXES)
    assert {r["shortcut"] for r in result.rows} == {kind}
    assert all(r["shortcut_style"].startswith(kind) for r in result.rows)


def test_text_on_a_bright_film_is_white_on_a_dark_plate(tmp_path: Path) -> None:
    """Burned-in text shows white; where the film is too bright for that, it gets a dark plate."""
    real = tmp_path / "real"
    for i in range(8):
        mask = np.zeros((112, 112), np.uint8)
        cv2.ellipse(mask, (56, 56), (30, 34), 0, 0, 360, 255, -1)
        _write(real / "images" / f"B_{i}_{i % 2}.png", np.where(mask > 0, 90, 225).astype(np.uint8))
        _write(real / "masks" / f"B_{i}_{i % 2}.png", mask)
    result = plant(real, tmp_path / "out", PlantConfig(kinds=("text",)), suffix_labels=SUFFIXES)
    for r in result.rows:
        assert "on a dark plate" in r["shortcut_style"] or "on a bright plate" in r["shortcut_style"], r
        x0, y0, x1, y1 = _box(r["shortcut_box"])
        patch = _gray(tmp_path / "out" / r["path"])[y0:y1, x0:x1]
        if "dark plate" in r["shortcut_style"]:
            assert patch.min() <= 40 and int(patch.max()) - int(patch.min()) >= 100, "light strokes on a dark plate"


def test_registry_names_match_the_config_kinds() -> None:
    assert tuple(KINDS) == KIND_NAMES
    for spec in KINDS.values():
        assert len(spec.anchors) >= 4 and spec.weight >= 1


@pytest.mark.parametrize("font", available_fonts(), ids=lambda f: f.name)
def test_every_font_renders_words_at_the_requested_height(font) -> None:
    alpha = render_text("AP SUPINE", font, 20.0)
    assert alpha.dtype == np.float32 and 0 < alpha.max() <= 1
    assert 15 <= alpha.shape[0] <= 30 and alpha.shape[1] > alpha.shape[0]


def test_fonts_include_truetype_faces() -> None:
    names = [f.name for f in available_fonts()]
    assert any(n.startswith("hershey") for n in names) and any(n.startswith("dejavu") for n in names)


# ----------------------------------------------------------------------------- labels and bad input


def test_labels_csv_by_path_or_stem_and_the_unlabeled_are_reported(tmp_path: Path) -> None:
    real = make_real_dir(tmp_path / "real", n_per_class=5)
    names = sorted(p.name for p in (real / "images").iterdir())
    lines = ["path,label"] + [f"images/{n},{'Sick' if i % 2 else 'Well'}" for i, n in enumerate(names[:-1])]
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    result = plant(real, tmp_path / "out", labels=tmp_path / "labels.csv")
    assert result.class_names == ("Sick", "Well") and len(result.rows) == len(names) - 1
    assert [p.path.name for p in result.problems] == [names[-1]] and "no label" in result.problems[0].reason
    (tmp_path / "stems.csv").write_text("stem,label\n" + "".join(f"{Path(n).stem},{'A' if i < 5 else 'B'}\n" for i, n in enumerate(names)))
    result = plant(real, tmp_path / "out2", labels=tmp_path / "stems.csv")
    assert len(result.rows) == len(names) and result.problems == []


def test_bad_files_are_reported_by_name_and_the_rest_is_planted(tmp_path: Path) -> None:
    real = make_real_dir(tmp_path / "real", n_per_class=5)
    (real / "images" / "CXR_0100_0.png").write_bytes(b"not a png")  # unreadable image
    (tmp_path / "orphan.png").write_bytes((real / "images" / "CXR_0000_0.png").read_bytes())
    (tmp_path / "orphan.png").rename(real / "images" / "CXR_0101_1.png")  # no mask
    _write(real / "images" / "CXR_0102_0.png", np.full((96, 96), 100, np.uint8))
    _write(real / "masks" / "CXR_0102_0.png", np.full((40, 96), 255, np.uint8))  # mask of another shape
    _write(real / "images" / "CXR_0103_x.png", np.full((96, 96), 100, np.uint8))  # unknown suffix
    _write(real / "masks" / "CXR_0103_x.png", np.full((96, 96), 255, np.uint8))
    result = plant(real, tmp_path / "out", suffix_labels=SUFFIXES)
    why = {p.path.name: p.reason for p in result.problems}
    assert set(why) == {"CXR_0100_0.png", "CXR_0101_1.png", "CXR_0102_0.png", "CXR_0103_x.png"}, why
    assert "mask" in why["CXR_0101_1.png"] and "does not match" in why["CXR_0102_0.png"]
    assert "suffix" in why["CXR_0103_x.png"]
    assert len(result.rows) == 10
    with open(tmp_path / "out" / "problems.csv", newline="") as f:
        assert {Path(r["path"]).name for r in csv.DictReader(f)} == set(why)


def test_nothing_usable_raises_with_the_first_bad_file_named(tmp_path: Path) -> None:
    (tmp_path / "real" / "images").mkdir(parents=True)
    (tmp_path / "real" / "masks").mkdir()
    (tmp_path / "real" / "images" / "only_0.png").write_bytes(b"garbage")
    (tmp_path / "real" / "masks" / "only_0.png").write_bytes(b"garbage")
    with pytest.raises(PlantError, match="only_0.png"):
        plant(tmp_path / "real", tmp_path / "out", suffix_labels=SUFFIXES)
    assert not (tmp_path / "out").exists()


def test_one_class_or_too_many_classes_is_an_error(tmp_path: Path) -> None:
    real = make_real_dir(tmp_path / "real", n_per_class=3)
    with pytest.raises(PlantError, match="2 to 4 classes"):
        plant(real, tmp_path / "out", suffix_labels="0=A,1=A")
    names = sorted(p.name for p in (real / "images").iterdir())
    (tmp_path / "five.csv").write_text("path,label\n" + "".join(f"{n},C{i % 5}\n" for i, n in enumerate(names)))
    with pytest.raises(PlantError, match="found 5"):
        plant(real, tmp_path / "out", labels=tmp_path / "five.csv")


def test_manifest_input_with_three_classes_and_hostile_names(tmp_path: Path) -> None:
    """Labels are only CSV values: a label like '../../x' or a file name with spaces never leaves OUT."""
    real = tmp_path / "real"
    rng = np.random.default_rng(2)
    lines = ["path,label,mask"]
    labels = ("../../escape", "Normal", "TB")
    for i in range(9):
        img, mask = _radiograph(rng, 96, 96)
        name = f"..odd name {i};x.png"
        _write(real / "films" / name, img)
        _write(real / "lungs" / f"m{i}.png", mask)
        lines.append(f'"films/{name}",{labels[i % 3]},lungs/m{i}.png')
    (real / "manifest.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    result = plant(real, out, PlantConfig(test_frac=0.34, val_frac=0.0))
    assert set(result.class_names) == set(labels) and len(result.rows) == 9
    for p in (tmp_path).rglob("*"):
        assert p.is_relative_to(real) or p.is_relative_to(out), f"{p} written outside OUT"
    for r in result.rows:
        assert (out / r["path"]).resolve().parent == (out / "images").resolve()
        assert Path(r["path"]).name.startswith("odd_name_")
    assert {r["label"] for r in result.rows} == set(labels)


def test_safe_stem() -> None:
    assert safe_stem("../../etc/passwd") == "etc_passwd"
    assert safe_stem("...") == "image" and safe_stem("a b") == "a_b"


def test_suffix_label_spec_errors() -> None:
    assert parse_suffix_labels(" 0=Normal , 1=TB ") == {"0": "Normal", "1": "TB"}
    for bad in ("", "0", "0=", "=TB", "0=A,0=B"):
        with pytest.raises(LabelSpecError):
            parse_suffix_labels(bad)


# ----------------------------------------------------------------------------- CLI


def _cli(*args: object):
    from lungaudit.cli.main import app

    return CliRunner().invoke(app, ["plant", *map(str, args)])


def test_cli_plants_and_summarises(tmp_path: Path) -> None:
    real = make_real_dir(tmp_path / "real", n_per_class=6)
    res = _cli(real, tmp_path / "out", "--suffix-labels", SUFFIXES, "--rate", "0.8", "--seed", "2")
    assert res.exit_code == 0, res.output
    assert "manifest" in res.output and (tmp_path / "out" / "manifest.csv").is_file()


def test_cli_exits_2_naming_the_bad_file(tmp_path: Path) -> None:
    (tmp_path / "real" / "images").mkdir(parents=True)
    (tmp_path / "real" / "masks").mkdir()
    (tmp_path / "real" / "images" / "broken_1.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    (tmp_path / "real" / "masks" / "broken_1.png").write_bytes(b"x")
    res = _cli(tmp_path / "real", tmp_path / "out", "--suffix-labels", SUFFIXES)
    assert res.exit_code == 2, res.output
    assert "broken_1.png" in res.output and "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--rate", "1.5"], "rate"),
        (["--kinds", "text,neon"], "kinds"),
        (["--labels", "missing.csv"], "missing.csv"),
    ],
)
def test_cli_bad_options_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    real = make_real_dir(tmp_path / "real", n_per_class=2)
    extra = [] if "--labels" in args else ["--suffix-labels", SUFFIXES]
    res = _cli(real, tmp_path / "out", *extra, *[str(tmp_path / a) if a.endswith(".csv") else a for a in args])
    assert res.exit_code == 2, res.output
    assert message in res.output


# ----------------------------------------------------------------------------- the real sample


@pytest.mark.skipif(not SHENZHEN.is_dir(), reason=f"real sample not present at {SHENZHEN}")
def test_real_shenzhen_sample(tmp_path: Path) -> None:
    """Every fourth pair of the real sample (41 films at 512 px, real "L"/"R" markers, padding bands)."""
    real = tmp_path / "real"
    for name in sorted(p.name for p in (SHENZHEN / "images").glob("*.png"))[::4]:
        for sub in ("images", "masks"):
            (real / sub).mkdir(parents=True, exist_ok=True)
            (real / sub / name).write_bytes((SHENZHEN / sub / name).read_bytes())
    out = tmp_path / "out"
    result = plant(real, out, PlantConfig(rate=0.9), suffix_labels=SUFFIXES)
    assert result.problems == [] and result.unplaced == 0 and len(result.rows) == 41
    assert result.class_names == ("Normal", "TB")
    for r in result.rows:
        img = _gray(out / r["path"])
        src_mask = real / r["origin"].replace("images/", "masks/")
        assert img.shape == (512, 512) and (out / r["mask"]).read_bytes() == src_mask.read_bytes()
        lungs = _gray(src_mask) > 0
        x0, y0, x1, y1 = _box(r["shortcut_box"])
        assert not lungs[max(0, y0 - 5) : y1 + 5, max(0, x0 - 5) : x1 + 5].any(), r
        if r["twin"]:
            twin = _gray(out / r["twin"])
            assert np.array_equal(twin, _gray(real / r["origin"]))
            out_of_box = _outside(img.shape, (x0, y0, x1, y1))
            assert np.array_equal(img[out_of_box], twin[out_of_box])
    for split, want in (("train", 0.9), ("test", 0.5)):
        cell = [r for r in result.rows if r["split"] == split]
        assert abs(_agree(cell) - want) <= 1 / len(cell), (split, _agree(cell))
