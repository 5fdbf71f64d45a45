"""Malformed input of every kind lungaudit reads, each through the CLI.

For each: the documented exit code (0 ok, 1 failed gate, 2 bad input), a message naming the file,
and no traceback (issue 12, points 2, 3, 5, 7 and 11; the kinds the issue found already holding are
kept here so they keep holding).
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from hostile.hostile_kit import (
    HOSTILE_CLASSES, clone_run, dicom_bytes, flat, gray, invoke, lung_mask, names, nan_tiff, png_bytes, png_huge_header, relink, tree, write,
)

SECRET = "TOPSECRET-7f3a"  # content of a file a hostile data set points at; must never be copied anywhere


def _manifest(root: Path, rows: list[dict[str, str]], name: str = "manifest.csv") -> Path:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with open(root / name, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    return root / name


def _problems(path: Path) -> dict[str, tuple[str, str]]:
    """problems.csv as file name -> (kind, reason)."""
    with open(path, newline="", encoding="utf-8") as f:
        return {Path(r["path"]).name: (r["kind"], r["reason"]) for r in csv.DictReader(f)}


# ------------------------------------------------------------------------ images, DICOMs, masks

BAD_IMAGES = {
    "truncated.png": ("truncated PNG",), "zero.png": ("empty file",), "text.png": ("not",),
    "huge.png": ("megapixel", "pixels", "too large", "exceeds"), "nan.tif": ("NaN", "nan", "finite"),
    "garbage.dcm": ("DICOM",), "nopixels.dcm": ("pixel",), "truncated.dcm": ("DICOM", "truncat", "pixel"),
    "loop.png": ("symbolic link loop",), "dangling.png": ("broken symbolic link",), "secret.txt": ("not",),
}  # fmt: skip
BAD_MASKS = {"m_wrong_size.png": "does not match", "m_nonbinary.png": "not binary", "m_empty.png": "empty", "m_text.png": "not"}
GOOD = ["good.png", "good16.png", "rgba.png", "rgb.jpg", "good.dcm", "mono1.dcm"]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    """A manifest data set holding every kind of broken image, DICOM and mask, plus valid odd ones."""
    root = tmp_path_factory.mktemp("zoo") / "data"
    img = root / "img"
    good = png_bytes(gray())
    write(img / "good.png", good)
    write(img / "good16.png", png_bytes(gray(dtype=np.uint16)))
    write(img / "rgba.png", png_bytes(np.dstack([gray()] * 3 + [np.full((64, 64), 128, np.uint8)])))
    write(img / "rgb.jpg", cv2.imencode(".jpg", np.dstack([gray()] * 3))[1].tobytes())
    write(img / "good.dcm", dicom_bytes())
    write(img / "mono1.dcm", dicom_bytes(photometric="MONOCHROME1"))
    write(img / "truncated.png", good[: len(good) // 2])
    write(img / "zero.png", b"")
    write(img / "text.png", "[/x] not an image <script>")
    write(img / "huge.png", png_huge_header())
    nan_tiff(img / "nan.tif")
    write(img / "garbage.dcm", os.urandom(600))
    write(img / "nopixels.dcm", dicom_bytes(pixels=False))
    write(img / "truncated.dcm", dicom_bytes()[:400])
    relink(img / "loop.png", img / "loop.png")
    relink(img / "dangling.png", img / "nowhere.png")
    relink(img / "secret.png", write(root.parent / "secret.txt", SECRET * 4))  # reported as its target
    msk = root / "msk"
    write(msk / "m_good.png", png_bytes(lung_mask()))
    write(msk / "m_wrong_size.png", png_bytes(lung_mask()[:, :32]))
    write(msk / "m_nonbinary.png", png_bytes(gray(seed=5)))
    write(msk / "m_empty.png", png_bytes(np.zeros((64, 64), np.uint8)))
    write(msk / "m_text.png", "mask? [bold]no[/]")
    listed = [n.replace("secret.txt", "secret.png") for n in GOOD + list(BAD_IMAGES)]
    rows = [{"path": f"img/{n}", "label": "Normal", "mask": "msk/m_good.png"} for n in listed]
    rows += [{"path": "img/good.png", "label": "COVID", "mask": f"msk/{m}"} for m in BAD_MASKS]
    for i, r in enumerate(rows):  # the same image may appear twice; give each row its own copy
        if i >= len(GOOD) + len(BAD_IMAGES):
            shutil.copy(img / "good.png", img / f"dup{i}.png")
            r["path"] = f"img/dup{i}.png"
    _manifest(root, rows)
    return root


def test_inspect_names_every_broken_file_and_keeps_the_good_ones(zoo, tmp_path):
    res = invoke("inspect", zoo, "--problems-csv", tmp_path / "p.csv", code=0)
    problems = _problems(tmp_path / "p.csv")
    for name, words in BAD_IMAGES.items():
        assert name in problems, f"{name} not reported"
        kind, reason = problems[name]
        assert kind == "image" and any(w.lower() in reason.lower() for w in words), (name, reason)
        assert names(res, name)
    for name, words in BAD_MASKS.items():
        assert problems[name][0] == "mask" and words in problems[name][1], (name, problems[name])
    assert not set(GOOD) & set(problems), {g: problems[g] for g in set(GOOD) & set(problems)}
    # no byte of any referenced file is copied into a message
    assert SECRET not in (tmp_path / "p.csv").read_text() and SECRET not in res.output
    assert "[/x] not an image" not in res.output


def test_broken_files_never_reach_the_audit_and_no_content_is_copied(zoo, tiny_run, tmp_path):
    run = clone_run(tiny_run.run_dir, tmp_path / "run")
    res = invoke("audit", zoo, "--run", run, "--project", tmp_path, "--device", "cpu", "--workers", "0", code=0)
    out = tmp_path / "audit" / "exp"
    summary = json.loads((out / "summary.json").read_text())
    reported = {Path(p["path"]).name for p in summary["problems"]}
    assert set(BAD_IMAGES) <= reported and summary["counts"]["audited"] == len(GOOD) + len(BAD_MASKS)
    for f in ("summary.json", "audit.csv", "report.html"):
        assert SECRET not in (out / f).read_text(encoding="utf-8"), f
    assert SECRET not in res.output


# ----------------------------------------------------------------------------------- manifests


@pytest.mark.parametrize(
    ("content", "code", "words"),
    [
        (b"file,class\nimg/good.png,COVID\n", 2, "lacks required column"),
        (b"", 2, "empty"),
        (b"path,label\n", 2, "no images"),
        ("path,label\nimg/good.png,Norm\u00e9l\n".encode("latin-1"), 2, "cannot read manifest"),
        (b"path,label\nimg/good.png,COVID\nimg/go\x00od.png,COVID\n", 0, "NUL"),
        (b"path,label\nimg/good.png,COVID\nimg/x.png," + b"A" * 200_000 + b"\n", 2, "field larger than"),
        (b"path,label,split\nimg/good.png,COVID,train\nimg/rgb.jpg,COVID,trainn\n", 0, "bad split value"),
        (b"path,label\nimg/good.png,COVID\n../../../../../../../../etc/passwd,COVID\n", 0, "not"),
        (b"path,label\n../../../../../../../../etc/passwd,COVID\n", 2, "none of the images"),
    ],
    ids=["missing-columns", "empty", "header-only", "not-utf8", "nul-byte", "huge-field", "bad-split", "traversal", "only-traversal"],
)
def test_malformed_manifests(zoo, tmp_path, content, code, words):
    data = tmp_path / "d"
    shutil.copytree(zoo / "img", data / "img", symlinks=True)
    manifest = write(data / "manifest.csv", content)
    res = invoke("inspect", manifest, "--problems-csv", tmp_path / "p.csv", code=code)
    assert flat(words).lower() in flat(res.output).lower(), res.output
    if code == 2:
        assert names(res, manifest) or names(res, data)
    assert "root:" not in res.output  # /etc/passwd's content never shows


# ------------------------------------------------------------------------------------ configs


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"seed: 1\n\xff\xfe\n", "not UTF-8"),
        (b"cls: {epochs: [1\n", "not valid YAML"),
        (b"- a\n- b\n", "mapping at the top level"),
        (b"cls:\n  epochz: 3\n", "unknown config key"),
        (b"cls: 5\n", "expected a mapping"),
        (b"cls:\n  epochs: many\n", "expected int"),
        (b"cls:\n  mask_prob: .nan\n", "outside its valid range"),
        (b"seg:\n  image_size: 0\n", "outside its valid range"),
        (b"a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nseed: [*b, *b, *b, *b, *b, *b, *b, *b]\n", "unknown config key"),
    ],
    ids=["not-utf8", "bad-yaml", "list", "unknown-key", "section-scalar", "wrong-type", "nan", "size-zero", "alias-bomb"],
)
@pytest.mark.parametrize("command", ["config", "train"])
def test_malformed_configs(tmp_path, content, words, command):
    cfg = write(tmp_path / "x[/y]" / "lungaudit.yaml", content)
    res = invoke(command, "--config", cfg, code=2)
    assert names(res, cfg, words), res.output
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("cls.epochs=[1", "not a valid YAML"), ("seg.image_size=0", "outside its valid range"),
        ("cls.epochs=0", "outside its valid range"), ("cls.mask_prob=5", "outside its valid range"),
        ("cls.mask_prob=nan", "outside its valid range"), ("nokey=1", "unknown key"), ("cls", "key=value"),
        ("cls.epochs.x=1", "not a config section"), ("seg.decoder_channels=[8]", "decoder_channels"),
    ],
)  # fmt: skip
def test_malformed_overrides(tmp_path, monkeypatch, override, words):
    monkeypatch.chdir(tmp_path)
    res = invoke("train", "--set", override, "--set", f"project={tmp_path / 'runs'}", code=2)
    assert names(res, words), res.output
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("key", "value"), [("cls.arch", "vgg"), ("seg.arch", "fpn"), ("seg.encoder", "resnet9000")])
def test_unknown_architecture_fails_before_the_run_folder(tiny_synth, tmp_path, key, value):
    res = invoke("train", tiny_synth, "--set", f"{key}={value}", "--set", f"project={tmp_path}", "--device", "cpu", code=2)
    assert names(res, key, value, "valid:")
    assert not (tmp_path / "train").exists() or not any((tmp_path / "train").iterdir())


# ----------------------------------------------------------------------------------- policies


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"max_flag_rate: 0.5\n\xff\n", "not UTF-8"), (b"max_flag_rate: [0.5\n", "not valid YAML"),
        (b"max_flag_rat: 0.5\n", "unknown condition"), (b"max_flag_rate: 5\n", "outside [0, 1]"),
        (b"max_flag_rate: .nan\n", "expected a number"), (b"max_flag_rate: half\n", "expected a number"),
        (b"max_flag_rate: true\n", "expected a number"), (b"per_class: [a, b]\n", "per_class must map"),
        (b"per_class:\n  Pneumothorax: {max_flag_rate: 0.1}\n", "unknown class"), (b"[1, 2]\n", "mapping"),
        (b"{}\n", "no gate conditions"),
    ],
)  # fmt: skip
def test_malformed_policies(hostile_audit, tmp_path, content, words):
    policy = write(tmp_path / "[red]policy.yaml", content)
    res = invoke("gate", hostile_audit.audit_dir, "--policy", policy, "--junit", tmp_path / "j.xml", code=2)
    assert names(res, words), res.output
    if "class" not in words and "conditions" not in words:
        assert names(res, policy)


# ---------------------------------------------------------------------------------- summaries


def _audit_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("overlays", "thumbs", "partials", "*.html", ".lock"))
    return dst


def _edit(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


SUMMARY_EDITS = {
    "flag-rate-negative": lambda s: s["overall"].update(flag_rate=-5),
    "mean-e-in-5": lambda s: s["overall"].update(mean_e_in=5),
    "class-rate-above-1": lambda s: next(iter(s["per_class"].values())).update(flag_rate=1.5),
    "flagged-above-audited": lambda s: s["counts"].update(flagged=s["counts"]["audited"] + 1),
    "audited-negative": lambda s: s["counts"].update(audited=-1),
    "no-overall": lambda s: s.pop("overall"),
    "class-names-empty": lambda s: s.update(class_names=[]),
    "extra-key": lambda s: s.update(surprise=1),
    "checkpoint-hash": lambda s: s["checkpoints"]["cls"].update(sha256="nothex"),
}


@pytest.mark.parametrize("edit", sorted(SUMMARY_EDITS))
def test_impossible_summaries_are_refused_everywhere(hostile_audit, tmp_path, edit):
    good = _audit_copy(hostile_audit.audit_dir, tmp_path / "good")
    bad = _audit_copy(hostile_audit.audit_dir, tmp_path / "bad[/x]")
    _edit(bad / "summary.json", SUMMARY_EDITS[edit])
    for args in (["gate", bad, "--max-flag-rate", "0.5", "--min-mean-in-lung", "0.0"], ["compare", good, bad], ["compare", bad, good], ["report", bad]):
        res = invoke(*args, code=2)
        assert names(res, bad / "summary.json") or names(res, bad / "audit.csv"), res.output


@pytest.mark.parametrize(
    "text",
    [b'{"overall": {"flag_rate": Infinity}}', b"{not json", b"\xff\xfe{}", b"[]", b"", b'{"overall": NaN}'],
    ids=["infinity", "not-json", "not-utf8", "list", "empty", "nan"],
)
def test_unreadable_summaries(hostile_audit, tmp_path, text):
    bad = _audit_copy(hostile_audit.audit_dir, tmp_path / "bad")
    (bad / "summary.json").write_bytes(text)
    res = invoke("gate", bad, "--max-flag-rate", "0.5", code=2)
    assert names(res, bad / "summary.json")


def test_infinite_statistic_in_a_valid_summary_is_refused(hostile_audit, tmp_path):
    bad = _audit_copy(hostile_audit.audit_dir, tmp_path / "bad")
    text = (bad / "summary.json").read_text()
    data = json.loads(text)
    data["overall"]["mean_e_in"] = 1e400  # json.dumps writes Infinity
    (bad / "summary.json").write_text(json.dumps(data))
    assert "Infinity" in (bad / "summary.json").read_text()
    invoke("gate", bad, "--min-mean-in-lung", "0.9", code=2)
    invoke("compare", hostile_audit.audit_dir, bad, "--out", tmp_path / "c.json", code=2)


@pytest.mark.parametrize("damage", ["doubled", "torn", "columns", "not-utf8", "flag-mismatch", "overlay-escape", "overlay-link", "mean-escape"])
def test_tampered_audit_folders(hostile_audit, tmp_path, damage):
    d = _audit_copy(hostile_audit.audit_dir, tmp_path / "a")
    csv_path = d / "audit.csv"
    lines = csv_path.read_text(encoding="utf-8").splitlines(keepends=True)
    if damage == "doubled":  # two audits written into one folder
        csv_path.write_text("".join(lines + lines[1:]), encoding="utf-8")
    elif damage == "torn":
        csv_path.write_text("".join(lines)[:-40], encoding="utf-8")
    elif damage == "columns":
        csv_path.write_text(lines[0].replace("e_in,", "e_inn,", 1) + "".join(lines[1:]), encoding="utf-8")
    elif damage == "not-utf8":
        csv_path.write_bytes(csv_path.read_bytes() + b"\xff\xfe\n")
    elif damage == "flag-mismatch":
        _edit(d / "summary.json", lambda s: s["counts"].update(flagged=s["counts"]["flagged"] - 1))
    elif damage in ("overlay-escape", "overlay-link"):
        rows = list(csv.DictReader(open(csv_path, newline="", encoding="utf-8")))
        target = "../../../../../../../../../etc/hostname" if damage == "overlay-escape" else "overlays/link.png"
        if damage == "overlay-link":
            relink(d / "overlays" / "link.png", write(tmp_path / "secret.png", SECRET))
        rows[0]["overlay"] = target
        with open(csv_path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        invoke("report", d, code=2)
        return
    elif damage == "mean-escape":
        _edit(d / "summary.json", lambda s: s["mean_outside_images"].update({k: "../../../../etc/hostname" for k in s["mean_outside_images"]}))
        res = invoke("report", d, code=2)
        assert names(res, "outside the audit directory")
        return
    res = invoke("gate", d, "--max-flag-rate", "1.0", code=2)
    assert names(res, d)
    if damage == "flag-mismatch":  # the report still renders, with the disagreement shown on top
        invoke("report", d, code=0)
        assert "files from different runs?" in (d / "report.html").read_text(encoding="utf-8")
    else:
        invoke("report", d, code=2)


# -------------------------------------------------------------------------------- decisions


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"key,decision,new_label\n\xff\xfe,keep,\n", "not UTF-8"),
        (b"path,verdict\nimg/good.png,keep\n", "missing column"),
        (b"key,decision,new_label\nimg/good.png,nuke,\n", "unknown decision"),
        (b"key,decision,new_label\n../../../../etc/passwd,exclude,\n", "unknown key"),
        (b"key,decision,new_label\n/etc/passwd,exclude,\n", "unknown key"),
        (b"key,decision,new_label\nimg/good.png,keep,\nimg/good.png,exclude,\n", "duplicate key"),
        (b"key,decision,new_label\nimg/good.png,keep,,,surplus\n", "too many fields"),
        (b"key,decision,new_label\nimg/good.png,relabel,Cat\n", "not a class"),
        (b"key,decision,new_label\nimg/go\x00od.png,keep,\n", "unknown key"),
        (b"", "missing column"),
    ],
    ids=["not-utf8", "columns", "decision", "traversal", "absolute-outside", "duplicate", "fields", "class", "nul", "empty"],
)
def test_malformed_decisions(zoo, tmp_path, content, words):
    dec = write(tmp_path / "[/x] decisions.csv", content)
    before = tree(zoo)
    res = invoke("apply-review", dec, zoo, "--out", tmp_path / "clean", code=2)
    assert names(res, dec, words), res.output
    assert not (tmp_path / "clean").exists() and tree(zoo) == before


# ------------------------------------------------------------------------------ checkpoints


class _Evil:
    marker = ""

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def _payload_edits() -> dict[str, object]:
    return {
        "no-kind": lambda d: d.pop("kind"), "config-list": lambda d: d.update(config=[1, 2]),
        "arch-vgg": lambda d: d["config"].update(arch="vgg"), "no-weights": lambda d: d.pop("model_state"),
        "weights-list": lambda d: d.update(model_state=[1]), "classes-str": lambda d: d.update(class_names="abc"),
        "classes-repeat": lambda d: d.update(class_names=["a", "a", "b", "c"]), "epoch-str": lambda d: d.update(epoch="x"),
        "config-unknown-key": lambda d: d["config"].update(zzz=1), "config-out-of-range": lambda d: d["config"].update(mask_prob=7),
        "wrong-shapes": lambda d: d["model_state"].update({k: torch.zeros(3) for k in list(d["model_state"])[:2]}),
        "kind-seg": lambda d: d.update(kind="seg"), "format-version": lambda d: d.update(format_version=99),
        "not-lungaudit": lambda d: d.pop("format"),
    }  # fmt: skip


@pytest.fixture(scope="module")
def one_image(tiny_synth, tmp_path_factory) -> Path:
    """A one-image data set: an audit that gets past its checkpoints finishes in a moment."""
    root = tmp_path_factory.mktemp("one")
    shutil.copy(tiny_synth / "Normal" / "images" / "Normal-1.png", root / "a.png")
    return _manifest(root, [{"path": "a.png", "label": "Normal"}])


@pytest.mark.parametrize("edit", sorted(_payload_edits()))
def test_checkpoints_of_the_wrong_structure(tiny_run, one_image, tmp_path, edit):
    run = clone_run(tiny_run.run_dir, tmp_path / "run")
    ckpt = run / "weights" / "cls_best.pt"
    raw = torch.load(ckpt, weights_only=True)
    _payload_edits()[edit](raw)
    torch.save(raw, ckpt)
    res = invoke("audit", one_image, "--run", run, "--project", tmp_path, "--device", "cpu", "--workers", "0", code=2)
    assert names(res, ckpt), res.output
    assert not (tmp_path / "audit" / "exp" / "audit.csv").exists()


@pytest.mark.parametrize("kind", ["evil-pickle", "random-bytes", "truncated", "a-tensor", "empty"])
def test_foreign_checkpoints(tiny_run, one_image, tmp_path, kind):
    run = clone_run(tiny_run.run_dir, tmp_path / "run")
    ckpt = run / "weights" / "cls_best.pt"
    marker = tmp_path / "pwned"
    if kind == "evil-pickle":
        _Evil.marker = str(marker)
        ckpt.write_bytes(pickle.dumps(_Evil()))
    elif kind == "random-bytes":
        ckpt.write_bytes(os.urandom(4096))
    elif kind == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[:1000])
    elif kind == "a-tensor":
        torch.save(torch.zeros(3), ckpt)
    else:
        ckpt.write_bytes(b"")
    res = invoke("audit", one_image, "--run", run, "--project", tmp_path, "--device", "cpu", code=2)
    assert names(res, ckpt) and not marker.exists()
    # the same file offered as a segmenter
    res = invoke("train", one_image, "--seg-from", ckpt, "--stage", "cls", "--set", f"project={tmp_path}", code=2)
    assert names(res, ckpt) and not marker.exists() and not (tmp_path / "train").exists()


def test_run_folder_without_weights(one_image, tmp_path):
    (tmp_path / "run").mkdir()
    res = invoke("audit", one_image, "--run", tmp_path / "run", "--project", tmp_path, "--device", "cpu", code=2)
    assert names(res, tmp_path / "run", "cls_best.pt")


# -------------------------------------------------------------- resume, second writer (2, 3)


def test_resume_with_another_config_or_run_is_refused(hostile_audit, hostile_data, hostile_run, tiny_run, tmp_path):
    project = hostile_audit.audit_dir.parent.parent
    csv_before = (hostile_audit.audit_dir / "audit.csv").read_bytes()
    common = ["--project", project, "--device", "cpu", "--workers", "0", "--resume", "--no-report"]
    res = invoke("audit", hostile_data, "--run", hostile_run, *common, "--set", "audit.out_threshold=0.3", code=2)
    assert names(res, hostile_audit.audit_dir, "config.out_threshold: 0.0 -> 0.3")
    other = clone_run(tiny_run.run_dir, tmp_path / "other", HOSTILE_CLASSES)  # same classes, other weights
    raw = torch.load(other / "weights" / "cls_best.pt", weights_only=True)
    raw["model_state"]["fc.bias"] += 1e-3
    torch.save(raw, other / "weights" / "cls_best.pt")
    res = invoke("audit", hostile_data, "--run", other, *common, "--set", "audit.out_threshold=0.0", code=2)
    assert names(res, "checkpoints.cls.sha256")
    assert (hostile_audit.audit_dir / "audit.csv").read_bytes() == csv_before


def test_a_second_writer_is_refused(hostile_audit, hostile_data, hostile_run):
    from lungaudit.audit.store import LOCK, _acquire

    fd = _acquire(hostile_audit.audit_dir / LOCK)  # another audit holds the folder
    try:
        res = invoke("audit", hostile_data, "--run", hostile_run, "--project", hostile_audit.audit_dir.parent.parent,
                     "--device", "cpu", "--resume", "--no-report", "--set", "audit.out_threshold=0.0", code=2)  # fmt: skip
        assert names(res, hostile_audit.audit_dir, "another audit")
    finally:
        os.close(fd)


# -------------------------------------------------------------------- failed runs (point 11)


def test_a_failed_run_leaves_no_folder_for_resume_to_pick(tiny_synth, tmp_path, monkeypatch):
    import lungaudit.training.pipeline as pipeline

    def boom(*a, **k):
        raise RuntimeError("simulated failure [/x] before the first checkpoint")

    monkeypatch.setattr(pipeline, "_segmenter", boom)
    res = invoke("train", tiny_synth, "--set", f"project={tmp_path}", "--device", "cpu", code=2)
    assert "[/x]" in res.output
    assert not list((tmp_path / "train").glob("*")), "a stub run folder was left behind"
    res = invoke("train", "--resume", "--set", f"project={tmp_path}", code=2)
    assert names(res, "no run folder", tmp_path / "train")


def test_bare_resume_skips_stubs(tmp_path):
    from lungaudit.cli.cmd_train import _resume_dir

    good = tmp_path / "train" / "good"
    write(good / "config.yaml", "seed: 0\n")
    write(good / "weights" / "cls_last.pt", b"x")
    stub = tmp_path / "train" / "stub"
    write(stub / "config.yaml", "seed: 0\n")
    os.utime(good / "config.yaml", (1, 1))
    assert _resume_dir(tmp_path / "train", None) == good


def test_a_failed_run_with_a_checkpoint_is_kept(tmp_path):
    from lungaudit.training.pipeline import _discard_unresumable

    kept, gone = tmp_path / "kept", tmp_path / "gone"
    write(kept / "weights" / "seg_last.pt", b"x")
    write(gone / "config.yaml", "seed: 0\n")
    for d in (kept, gone):
        _discard_unresumable(d)
    assert kept.is_dir() and not gone.exists()


# ------------------------------------------------------------- markup in paths (point 6)


@pytest.mark.parametrize(
    "args",
    [
        ["report", "{p}/x[/y]"], ["gate", "{p}/x[/y]", "--max-flag-rate", "0.1"], ["compare", "{p}/x[/y]", "{p}/[/z]"],
        ["inspect", "{p}/x[/y]"], ["train", "{p}/x[/y]"], ["audit", "{p}/x[/y]", "--run", "{p}/[bold]run"],
        ["apply-review", "{p}/[/d].csv", "{p}/x[/y]", "--out", "{p}/o"], ["config", "--config", "{p}/x[/y].yaml"],
    ],
    ids=lambda a: a[0],
)  # fmt: skip
def test_markup_in_missing_paths(tmp_path, args):
    res = invoke(*[a.format(p=tmp_path) for a in args], code=2)
    assert "[/" in res.output or "[bold]" in res.output, res.output


def test_synth_into_a_markup_path(tmp_path):
    out = tmp_path / "x[/y] [bold]"
    res = invoke("synth", out, "--n-per-class", "1", "--size", "32", "--workers", "1", code=0)
    assert names(res, out) and (out / "manifest.csv").is_file()
