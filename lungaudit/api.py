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
    from lungaudit.data.plant import PlantConfig, PlantResult
    from lungaudit.data.records import Dataset
    from lungaudit.report.gate import GatePolicy, GateResult
    from lungaudit.report.review import ReviewCounts
    from lungaudit.runs.restore import TrainedModels
    from lungaudit.services.export import ExportResult
    from lungaudit.services.predict import PredictResult
    from lungaudit.studies.explain import ExplainResult
    from lungaudit.studies.features import FeaturesResult
    from lungaudit.studies.sanity import SanityResult
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


def plant(
    real_dir: str | Path,
    out: str | Path,
    cfg: PlantConfig | None = None,
    *,
    labels: str | Path | None = None,
    suffix_labels: str | None = None,
    progress: Progress | None = None,
    **fields: Any,
) -> PlantResult:
    """Burn label-correlated shortcuts (text markers, rulers, bands, patches) into real radiographs.

    ``real_dir`` holds radiographs with lung masks; labels come from ``labels`` (a CSV) or from the
    file name's last ``_suffix`` (``suffix_labels="0=Normal,1=TB"``). Test images get clean twins, so
    the audit can be scored on real anatomy. Keyword ``fields`` override :class:`PlantConfig` keys
    (``rate=0.9, seed=1``). Raises ``DatasetError`` (with the problems) or ``ValueError``.
    """
    from dataclasses import replace

    from lungaudit.data.plant import PlantConfig
    from lungaudit.data.plant import plant as _plant

    config = replace(cfg or PlantConfig(), **fields)
    return _plant(Path(real_dir), Path(out), config, labels=Path(labels) if labels is not None else None, suffix_labels=suffix_labels, progress=progress)


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

    from lungaudit.config import apply_overrides
    from lungaudit.training.pipeline import train as _train

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
    from lungaudit.runs.data import run_config

    return run_config(run_dir, overrides)


def _audit_dataset(data: Any, run_dir: Path, layout: str | None, run_cfg: TrainConfig, split: str | None) -> Dataset:
    """The data to audit, its splits taken from the run wherever the run saw the image."""
    from lungaudit.runs.data import run_dataset

    return run_dataset(run_dir, data, layout, run_cfg, split)


def explain(
    images: str | Path | Sequence[str | Path],
    run: str | Path | None = None,
    *,
    methods: str | Sequence[str] = ("gradcam", "guided_gradcam", "integrated_gradients", "occlusion"),
    options: dict[str, dict[str, Any]] | None = None,
    target: str | None = None,
    name: str = "exp",
    out_dir: str | Path | None = None,
    project: str | Path = "runs",
    overrides: Sequence[str] = (),
    device: str = "auto",
    progress: Progress | None = None,
) -> ExplainResult:
    """Explain images with several methods side by side: one panel PNG per image plus ``explain.json``.

    Args:
        images: image files, folders or data sets (folder or manifest CSV). An image's lung mask is
            the given one when it belongs to a data set with masks (the run's own included), else
            the run's U-Net's.
        run: the training run folder; default the latest under ``<project>/train``.
        methods: registry names (``lungaudit.explain.CAM_METHODS``; ``ig`` for integrated gradients,
            ``"all"`` for every one), as a sequence or a comma list.
        options: per-method constructor options, e.g. ``{"integrated_gradients": {"n_steps": 16}}``.
        target: a class name to explain for every image (default: each image's predicted class).
        out_dir: default ``<project>/explain/<name>`` (``name2``... if taken).
        overrides: ``key=value`` overrides of the run's config (``audit.cam_score=logit``...).

    Each map is the one an audit with that method would measure (the run's ``audit`` score, floor
    and tolerance), so a panel's E_in is what ``audit.cam: <method>`` would report. Returns
    ``ExplainResult`` (``out_dir``, per-image records, problems). Raises ``ValueError`` (naming the
    method, option or files) when nothing can be explained.
    """
    from lungaudit.studies.common import open_run, output_dir
    from lungaudit.studies.explain import explain_images

    ctx = open_run(_run_folder(run, project), device, overrides)
    paths = [images] if isinstance(images, (str, Path)) else list(images)
    out = output_dir(out_dir, project, "explain", name)
    return explain_images(ctx, paths, out, methods, options, target, progress)


def sanity(
    run: str | Path | None = None,
    *,
    methods: str | Sequence[str] | None = None,
    n_images: int = 16,
    split: str = "test",
    options: dict[str, dict[str, Any]] | None = None,
    threshold: float = 0.5,
    random_epochs: int = 3,
    random_model: str | Path | None = None,
    seed: int = 0,
    name: str = "exp",
    out_dir: str | Path | None = None,
    project: str | Path = "runs",
    overrides: Sequence[str] = (),
    device: str = "auto",
    callback: TrainCallback | None = None,
    message: Callable[[str], None] | None = None,
) -> SanityResult:
    """Adebayo et al.'s sanity checks of each explanation method on a run (default: every method).

    On ``n_images`` of the run's ``split``: cascading model-parameter randomisation (layers
    re-initialised from the head down) and data randomisation (a copy of the classifier trained on
    permuted labels for ``random_epochs`` epochs, or reused from an earlier sanity folder with
    ``random_model``). A method whose maps still correlate (mean Spearman) above ``threshold`` with
    a randomised model's fails. Writes ``sanity.json``, ``sanity.png`` and ``sanity_maps.png`` into
    ``out_dir`` (default ``<project>/sanity/<name>``); ``result.methods[m]["verdict"]`` is pass, fail
    or undefined.
    """
    from lungaudit.studies.common import open_run, output_dir
    from lungaudit.studies.sanity import run_sanity

    ctx = open_run(_run_folder(run, project), device, overrides)
    out = output_dir(out_dir, project, "sanity", name)
    return run_sanity(ctx, out, methods, n_images, split, options, seed, threshold, random_epochs,
                      Path(random_model) if random_model is not None else None, callback, message)  # fmt: skip


def features(
    data: str | Path | Dataset | None = None,
    run: str | Path | None = None,
    *,
    split: str | None = None,
    layout: str | None = None,
    k: int = 5,
    embeddings: Sequence[str] = ("pca", "tsne"),
    layer: str = "avgpool",
    n_splits: int = 5,
    max_images: int | None = None,
    seed: int = 0,
    name: str = "exp",
    out_dir: str | Path | None = None,
    project: str | Path = "runs",
    device: str = "auto",
    progress: Progress | None = None,
) -> FeaturesResult:
    """Feature-space views of a run's classifier and the source-leakage probe, full vs lung-masked input.

    ``data`` defaults to the run's own data set, of which ``split`` (default ``test``; ``all`` for
    everything) is studied; a data set given explicitly is studied whole unless ``split`` is given.
    Writes into ``out_dir`` (default ``<project>/features/<name>``): ``embedding_<method>.png``
    (by class and by source, full and masked), ``filters.png``, ``activations.png`` (the ``k`` most
    and least activating images per class), ``embeddings.csv``, ``activations.csv``,
    ``features.json`` (with the probe: cross-validated accuracy against chance) and a standalone
    ``features.html``.
    """
    from lungaudit.studies.common import open_run, output_dir
    from lungaudit.studies.features import run_features

    ctx = open_run(_run_folder(run, project), device)
    out = output_dir(out_dir, project, "features", name)
    return run_features(ctx, out, data, layout, split, k, embeddings, layer, n_splits, max_images, seed, progress)


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


def predict(
    images: str | Path | Sequence[str | Path],
    run: str | Path | None = None,
    *,
    project: str | Path = "runs",
    overrides: Sequence[str] = (),
    device: str = "auto",
    overlays: str | Path | None = None,
    batch_size: int | None = None,
    num_workers: int = 0,
    progress: Progress | None = None,
) -> PredictResult:
    """Predict single images (files or folders) with a run, each prediction audited as ``audit`` would.

    Per image: the predicted class and all probabilities, the lung-masked prediction, E_in/E_out, the
    dominant outside region, the flag and its reasons, and a verdict (``in-lung``, ``out-of-lung``,
    ``no evidence``), as ``result.predictions[i].row`` (an ``AuditRow``) and ``.verdict``. The run
    (default the latest under ``<project>/train``) is loaded once; its config gives the audit settings
    and the pixel cap (``overrides``: ``key=value`` for ``audit.*`` or ``data.max_megapixels``).
    ``overlays``: a folder for one overlay PNG per image. Files that cannot be read are listed in
    ``result.problems`` with their reason, never raised; a bad run or config raises ``ValueError``.
    """
    from lungaudit.services.predict import Predictor, predict_files

    run_dir = _run_folder(run, project)
    predictor = Predictor.load(run_dir, _run_config(run_dir, overrides), device=device)
    inputs = [images] if isinstance(images, (str, Path)) else list(images)
    return predict_files(predictor, inputs, overlays=overlays, batch_size=batch_size, num_workers=num_workers, progress=progress)


def serve(
    run: str | Path | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    project: str | Path = "runs",
    overrides: Sequence[str] = (),
    device: str = "auto",
    max_upload_mb: float = 32.0,
    max_batch: int = 16,
    max_wait_ms: float = 5.0,
    log_level: str = "info",
    methods: Sequence[str] | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the local web app and JSON API for a run until interrupted (blocks).

    Binds 127.0.0.1 unless ``host`` says otherwise; a non-loopback ``host`` also lifts the Host-header
    check. ``POST /predict`` takes a multipart upload (field ``file``); concurrent uploads are
    micro-batched onto the device (up to ``max_batch``, waiting at most ``max_wait_ms`` for company).
    ``methods``: explanation maps shown beside the audited heatmap (default: whichever of Grad-CAM and
    guided Grad-CAM are registered). ``on_ready(url)`` is called once the port is bound. Raises ``ValueError`` for a bad run or config
    and ``OSError`` when the address cannot be listened on.
    """
    from lungaudit.services.predict import Predictor
    from lungaudit.services.serve import LOOPBACK_HOSTS, ServeSettings, create_app, is_loopback, run_server

    run_dir = _run_folder(run, project)
    predictor = Predictor.load(run_dir, _run_config(run_dir, overrides), device=device, methods=methods)
    settings = ServeSettings(max_upload_mb=max_upload_mb, max_batch=max_batch, max_wait_ms=max_wait_ms,
                             allowed_hosts=LOOPBACK_HOSTS if is_loopback(host) else ("*",))  # fmt: skip
    run_server(create_app(predictor, settings), host=host, port=port, log_level=log_level, on_ready=on_ready)


def export(
    run: str | Path | None = None,
    out: str | Path | None = None,
    *,
    formats: Sequence[str] = ("onnx",),
    project: str | Path = "runs",
    parity_images: Sequence[str | Path] = (),
) -> ExportResult:
    """Export the run's segmenter and classifier (``onnx`` and/or ``torchscript``) into ``out``
    (default ``<run>/export``), with ``contract.json`` beside them; refused unless the exported models
    reproduce the run's outputs (random, radiograph-shaped and the ``parity_images``)."""
    from lungaudit.services.export import export_run

    run_dir = _run_folder(run, project)
    return export_run(run_dir, out, formats, parity_images=parity_images, max_pixels=_run_config(run_dir, ()).data.max_pixels)


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
    "DemoResult", "apply_review", "audit", "compare", "demo", "explain", "export", "features", "gate", "inspect",
    "load_config", "load_dataset", "load_run", "plant", "predict", "report", "sanity", "serve", "synth", "train",
]
