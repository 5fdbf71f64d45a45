"""``lungaudit serve`` (the local web app) and ``lungaudit export`` (ONNX / TorchScript for deployment)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from lungaudit.cli.app import app
from lungaudit.cli.common import console, err_console, fail, say, table


@app.command()
def serve(
    run: Optional[Path] = typer.Option(None, "--run", help="Training run folder (default: the latest under runs/train)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; anything but loopback exposes the app to the network."),
    port: int = typer.Option(8000, "--port", min=0, max=65535),
    max_upload_mb: float = typer.Option(32.0, "--max-upload-mb", min=0.001, help="Largest accepted upload."),
    max_batch: int = typer.Option(16, "--max-batch", min=1, help="Most uploads audited in one device pass."),
    max_wait_ms: float = typer.Option(100.0, "--max-wait-ms", min=0.0, help="Longest a batch waits for uploads still decoding, or for as many as were lately in flight at once."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Override a key of the run's config, e.g. --set data.max_megapixels=30."),
    project: Path = typer.Option(Path("runs"), "--project", help="Parent folder of train/."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level: critical | error | warning | info | debug"),
    methods: Optional[str] = typer.Option(None, "--methods", help="Comma list of explanation maps to show (default: gradcam,guided_gradcam where registered)."),
) -> None:
    """Serve a local web page and JSON API: upload a radiograph, see its audited prediction."""
    import lungaudit as la
    from lungaudit.services.serve import is_loopback

    if not is_loopback(host):
        err_console.print(f"warning: listening on {host}: anyone who can reach this machine can use the app", markup=False)
    try:
        la.serve(run, host=host, port=port, project=project, overrides=list(set_ or []), device=device,
                 max_upload_mb=max_upload_mb, max_batch=max_batch, max_wait_ms=max_wait_ms, log_level=log_level,
                 methods=[m.strip() for m in methods.split(",") if m.strip()] if methods else None, on_ready=lambda url: say("lungaudit serve: open [bold]{}/[/] (Ctrl-C stops)", url))  # fmt: skip
    except (ValueError, OSError) as e:  # a bad run/config, or the port is taken
        fail(str(e))


@app.command()
def export(
    run: Optional[Path] = typer.Option(None, "--run", help="Training run folder (default: the latest under runs/train)."),
    format_: list[str] = typer.Option(["onnx"], "--format", help="onnx | torchscript (repeat for both)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: <run>/export)."),
    parity_image: Optional[list[Path]] = typer.Option(None, "--parity-image", help="Also check parity on this real image (repeatable)."),
    project: Path = typer.Option(Path("runs"), "--project", help="Parent folder of train/."),
) -> None:
    """Export the run's segmenter and classifier, proven equal to the run, with contract.json beside them."""
    import lungaudit as la

    try:
        result = la.export(run, out, formats=format_, project=project, parity_images=list(parity_image or []))
    except (ValueError, OSError, RuntimeError) as e:  # ExportError/CheckpointError are ValueErrors; RuntimeError: the exporter
        fail(str(e))
    rows = []
    for fmt in result.contract["formats"]:
        for name, par in result.contract["parity"][fmt].items():
            worst = max(v["max_abs_diff"] for v in par["inputs"].values())
            rows.append([name, fmt, result.files[name][fmt].name, f"{worst:.2g}", ", ".join(par["inputs"])])
    console.print(table("Exported (parity: largest difference from the run)", ["model", "format", "file", "max |diff|", "checked on"], rows))
    say("contract: [bold]{}[/]", result.out_dir / "contract.json")


__all__ = ["export", "serve"]
