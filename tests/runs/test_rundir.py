import csv

from lungaudit.runs.rundir import MetricsLog, increment_run_dir


def test_increment_run_dir(tmp_path):
    assert increment_run_dir(tmp_path, "exp") == tmp_path / "exp"
    (tmp_path / "exp").mkdir()
    assert increment_run_dir(tmp_path, "exp") == tmp_path / "exp2"
    (tmp_path / "exp2").mkdir()
    assert increment_run_dir(tmp_path, "exp") == tmp_path / "exp3"
    assert increment_run_dir(tmp_path, "exp", exist_ok=True) == tmp_path / "exp"


def test_metrics_log_never_duplicates_an_epoch(tmp_path):
    log = MetricsLog(tmp_path / "metrics.csv")
    for e in (1, 2, 3):
        log.append({"stage": "seg", "epoch": e, "train_loss": 1.0 / e})
    log.append({"stage": "cls", "epoch": 1, "train_loss": 0.5, "val_acc": 0.9})
    reopened = MetricsLog(tmp_path / "metrics.csv")
    reopened.truncate("seg", 2)  # epoch 3 had no checkpoint
    reopened.append({"stage": "seg", "epoch": 3, "train_loss": 0.2})
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    keys = [(r["stage"], r["epoch"]) for r in rows]
    assert len(keys) == len(set(keys)) == 4
    assert {r["train_loss"] for r in rows if r["stage"] == "seg" and r["epoch"] == "3"} == {"0.2"}
