"""The public Python API: one documented function per CLI command.

Every ``lungaudit <command>`` is a thin layer over the function of the same name here (``apply-review``
over :func:`apply_review`). Heavy libraries are imported inside the functions, so ``import lungaudit``
stays quick. Example::

    import lungaudit as la

    data = la.synth("data/synth", n_per_class=50, size=128)        # -> the data set folder
    run = la.train(data, name="exp", overrides=["cls.epochs=3"])   # -> TrainResult (run_dir, metrics)
    result = la.audit(run=run.run_dir, split="test")              # the run's own data and test split
    la.report(result.out_dir)
    verdict = la.gate(result.out_dir, max_flag_rate=0.25)          # verdict.passed
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:
    from lungaudit.audit.run import AuditResult
    from lungaudit.config import AuditConfig, SynthConfig, TrainConfig
    from lungaudit.data.layouts import Inspection
    from lungaudit.data.records import Dataset
    from lungaudit.report.gate import GatePolicy, GateResult
    from lungaudit.report.review import ReviewCounts
    from lungaudit.runs.restore import TrainedModels
    from lungaudit.training.callbacks import TrainCallback
    from lungaudit.training.pipeline import TrainResult

Progress = Callable[[int, int], None]


def synth(out: str | Path, cfg: SynthConfig | None = None, *, progress: Progress | None = None, **fields: Any) -> Path:
    """Write the synthetic phantom benchmark (lungs, planted shortcuts, clean twins) into ``out``.

    ``cfg`` defaults to the packaged ``synth`` section; keyword ``fields`` override single keys
    (``n_per_class=50, size=128``). Returns ``out``. Raises ``ValueError`` for an invalid config.
    """
    from dataclasses import replace

    from lungaudit.config import load_config
    from lungaudit.data.synth import generate

    base = cfg or load_config().synth
    generate(Path(out), replace(base, **fields), progress=progress)
    return Path(out)


def inspect(data: str | Path, *, layout: str = "auto", progress: Progress | None = None) -> Inspection:
    """Validate every image and mask of a data set and count it by class, split and source."""
    from lungaudit.config import load_config
    from lungaudit.data.layouts import inspect_dataset

    return inspect_dataset(data, layout, data_cfg=load_config().data, progress=progress)


def load_dataset(data: str | Path, *, layout: str = "auto", validate: bool = True) -> Dataset:
    """Read a data set in any supported layout (COVID-19 Radiography Database, class folders, manifest CSV)."""
    from lungaudit.config import load_config
    from lungaudit.data.layouts import load_dataset as _load

    return _load(data, layout, validate=validate, data_cfg=load_config().data)


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """The configuration: ``path``, else ``./lungaudit.yaml``, else the packaged defaults; then ``key=value`` overrides."""
    from lungaudit.config import load_config as _load

    return _load(path, list(overrides))


def train(
    data: str | Path | None = None,
    cfg: TrainConfig | None = None,
    *,
    name: str | None = None,
    stage: str = "all",
    seg_from: str | Path | None = None,
    overrides: Sequence[str] = (),
    resume: bool = False,
    device: str | None = None,
    callback: TrainCallback | None = None,
) -> TrainResult:
    """Train the U-Net and the masked/unmasked classifier into ``runs/train/<name>``.

    ``data`` (a folder or manifest CSV) defaults to the synthetic benchmark. ``seg_from`` (a run folder
    or a segmenter checkpoint) fills missing lung masks with an existing U-Net instead of training one.
    ``resume=True`` continues the run folder ``runs/train/<name>`` from its last checkpoints.
    """
    from dataclasses import replace

    from lungaudit.training.pipeline import train as _train

    from lungaudit.config import apply_overrides

    if cfg is None:
        cfg = load_config(overrides=overrides)
    elif overrides:
        cfg = apply_overrides(cfg, list(overrides))
    cfg = replace(cfg, name=name or cfg.name, device=device or cfg.device)
    if data is not None:
        cfg = replace(cfg, data=replace(cfg.data, root=str(data)))
    run_dir = Path(cfg.project) / "train" / cfg.name if resume else None
    return _train(cfg, stage=stage, resume=resume, run_dir=run_dir, callback=callback, seg_from=seg_from)


def load_run(run: str | Path, device: str = "auto") -> TrainedModels:
    """The classifier (and segmenter) of a training run, rebuilt from its checkpoints, in eval mode."""
    from lungaudit.device import resolve_device
    from lungaudit.runs.restore import load_run as _load

    return _load(Path(run), resolve_device(device))


def audit(
    data: str | Path | Dataset | None = None,
    run: str | Path | None = None,
    *,
    split: str | None = None,
    name: str = "exp",
    out_dir: str | Path | None = None,
    project: str | Path = "runs",
    layout: str | None = None,
    cfg: AuditConfig | None = None,
    overrides: Sequence[str] = (),
    device: str = "auto",
    resume: bool = False,
    progress: Progress | None = None,
    num_workers: int = 1,
) -> AuditResult:
    """Audit every prediction of a trained run: how much of its Grad-CAM energy lies in the lungs?

    Args:
        data: a folder, a manifest CSV or a loaded ``Dataset``; default the run's own data set.
        run: the training run folder; default the latest under ``<project>/train``.
        split: audit only ``train``, ``val`` or ``test``, as the *run* split them (images the run
            never saw have no split). Images the run trained on are counted in the summary.
        out_dir: default ``<project>/audit/<name>`` (``name2``, ``name3``... if taken).
        cfg, overrides: the audit config, default the run's own (its ``config.yaml``), then ``key=value``
            overrides of ``audit.*`` keys.
        resume: continue ``out_dir`` after an interruption; refused if it was audited with other
            checkpoints, config or images. Without it, a folder holding rows is refused.

    Under ``torchrun`` every process calls this alike: each audits its shard of the data and rank 0
    merges them into ``out_dir`` (see :mod:`lungaudit.audit.shards`).

    Returns ``AuditResult`` (``out_dir``, validated ``summary``, images/s). Raises ``ValueError`` (the
    file or key named) for anything it cannot audit.
    """
    from lungaudit import distributed as dist
    from lungaudit.audit.run import audit_dataset
    from lungaudit.runs.rundir import increment_run_dir

    dist.init(dist.rank_device(device))  # under torchrun: the ranks must agree on the folder below
    run_dir = _run_folder(run, project)
    run_cfg = _run_config(run_dir, overrides)
    dataset = _audit_dataset(data, run_dir, layout, run_cfg, split)
    out = Path(out_dir) if out_dir is not None else dist.main_decides(
        lambda: increment_run_dir(Path(project) / "audit", name, exist_ok=resume)
    )
    return audit_dataset(
        dataset, run_dir, out, cfg or run_cfg.audit, device=device, resume=resume, progress=progress,
        num_workers=num_workers, max_pixels=run_cfg.data.max_pixels,
    )  # fmt: skip


def _run_folder(run: str | Path | None, project: str | Path) -> Path:
    from lungaudit.runs.rundir import latest_run

    if run is not None:
        return Path(run)
    found = latest_run(Path(project))
    if found is None:
        raise ValueError(f"no trained run under {Path(project) / 'train'}; train one first or pass run=")
    return found


def _run_config(run_dir: Path, overrides: Sequence[str]) -> TrainConfig:
    """The run's own resolved config (older runs without one: the defaults), with ``overrides``."""
    from lungaudit.config import TrainConfig, apply_overrides, load_config as _load

    path = run_dir / "config.yaml"
    cfg = _load(path) if path.is_file() else TrainConfig()
    return apply_overrides(cfg, list(overrides)) if overrides else cfg


def _audit_dataset(data: Any, run_dir: Path, layout: str | None, run_cfg: TrainConfig, split: str | None) -> Dataset:
    """The data to audit, its splits taken from the run wherever the run saw the image."""
    from dataclasses import replace

    from lungaudit.data.layouts import load_dataset as _load
    from lungaudit.data.records import Dataset
    from lungaudit.data.split import SPLITS
    from lungaudit.runs.runinfo import apply_run_splits, read_run_info, read_splits

    info = read_run_info(run_dir)
    if data is None:
        if info is None:
            raise ValueError(f"{run_dir} does not record its data set (a run from an older lungaudit); pass the data set")
        data, layout = info.data_source, layout or info.layout
    dataset = data if isinstance(data, Dataset) else _load(data, layout or "auto", data_cfg=run_cfg.data)
    if info is not None:
        run_splits = read_splits(run_dir, info.data_root)
        own = apply_run_splits(dataset.samples, run_splits)
        # Images the run never saw keep the data set's own split, unless the data *is* the run's.
        same = Path(dataset.root).resolve() == Path(info.data_root).resolve()
        dataset = replace(dataset, samples=[o if (same or o.split) else s for o, s in zip(own, dataset.samples)])
    if split is not None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        dataset = replace(dataset, samples=dataset.split(split))
        if not dataset.samples:
            raise ValueError(f"{dataset.root} has no images in split {split!r}")
    return dataset


def report(audit_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the self-contained HTML bias report of an audit folder; returns its path."""
    from lungaudit.report.html import write_report

    return write_report(audit_dir, out)


def gate(
    audit_dir: str | Path, policy: GatePolicy | str | Path | None = None, *, junit: str | Path | None = None, **limits: float
) -> GateResult:
    """Pass/fail release gate on an audit: ``policy`` (a YAML path or ``GatePolicy``) plus keyword limits.

    Keyword limits: ``max_flag_rate``, ``min_mean_in_lung``, ``min_accuracy``, ``max_flip_rate``. With
    neither, the packaged default policy applies. ``result.passed`` is the verdict; ``gate.json`` and
    the JUnit XML are written beside the audit.
    """
    from lungaudit.config import packaged_config
    from lungaudit.report.gate import GatePolicy, load_policy, policy_from_dict, run_gate

    if policy is None and not limits:
        policy = packaged_config("gate.yaml")
    pol = load_policy(policy) if isinstance(policy, (str, Path)) else (policy or GatePolicy())
    pol = pol.merged(policy_from_dict(limits, "keyword arguments")) if limits else pol
    return run_gate(audit_dir, pol, junit=junit)


def compare(baseline: str | Path, candidate: str | Path, tolerance: float = 0.02, out: str | Path | None = None) -> dict[str, Any]:
    """Compare two audits of the same data set; ``result["regressed"]`` says whether the candidate got worse."""
    from lungaudit.report.compare import compare_audits

    return compare_audits(baseline, candidate, tolerance, out)[0]


def apply_review(decisions: str | Path, dataset: str | Path, out: str | Path, *, layout: str = "auto") -> tuple[Path, ReviewCounts]:
    """Apply a curator's ``decisions.csv`` (from the report) and write a cleaned manifest into ``out``."""
    from lungaudit.report.review import apply_review as _apply

    return _apply(decisions, dataset, out, layout=layout)


@dataclass
class DemoResult:
    data: Path
    train: TrainResult
    audit: AuditResult
    report: Path


def demo(
    out: str | Path = "data/synth",
    *,
    name: str = "demo",
    cfg: TrainConfig | None = None,
    device: str | None = None,
    callback: TrainCallback | None = None,
    progress: Progress | None = None,
    message: Callable[[str], None] | None = None,
) -> DemoResult:
    """The whole job on the embedded default: synth -> train -> audit of the test split -> HTML report."""
    from dataclasses import replace

    from lungaudit import distributed as dist

    say = message or (lambda _m: None)
    cfg = cfg or load_config()
    data = Path(out)
    dist.init(dist.rank_device(device or cfg.device))  # under torchrun: rank 0 writes the data and the report
    if not (data / "manifest.csv").is_file():
        say(f"1/4 synth -> {data}")
        if dist.world().is_main:
            synth(data, cfg.synth)
        dist.barrier()
    else:
        say(f"1/4 synth: reusing {data}")
    say("2/4 train")
    trained = train(data, replace(cfg, name=name), device=device, callback=callback)
    say(f"3/4 audit of the test split with {trained.run_dir}")
    audited = audit(run=trained.run_dir, split="test", name=name, project=cfg.project, device=device or cfg.device, progress=progress)
    say("4/4 report")
    return DemoResult(data, trained, audited, dist.main_decides(lambda: report(audited.out_dir)))


__all__ = [
    "DemoResult", "apply_review", "audit", "compare", "demo", "gate", "inspect", "load_config", "load_dataset",
    "load_run", "report", "synth", "train",
]
