"""The layout registry: every registered layout is detected on a minimal folder of its own kind,
detection follows the priority order, and names come from the registry. Parametrized over the
registry, so a new layout is tested here as soon as it has an entry in ``EXAMPLES``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from lungaudit.cli.choices import enum_from
from lungaudit.data.layouts import (
    LAYOUT_TYPES,
    LAYOUTS,
    DatasetError,
    detect_layout,
    detection_order,
    get_layout,
    layout_names,
    load_dataset,
)
from lungaudit.data.records import Problem


def _covid(root: Path, h) -> None:
    for cls in ("COVID", "Normal"):
        h.write_image(root / cls / "images" / "a.png", h.gradient())
        h.write_image(root / cls / "masks" / "a.png", h.lung_mask())


def _folders(root: Path, h) -> None:
    for cls in ("tb", "healthy"):
        h.write_image(root / cls / "a.png", h.gradient())


def _segonly(root: Path, h) -> None:
    h.write_image(root / "images" / "a.png", h.gradient())
    h.write_image(root / "masks" / "a.png", h.lung_mask())


def _manifest(root: Path, h) -> None:
    h.write_image(root / "x" / "a.png", h.gradient())
    (root / "manifest.csv").write_text("path,label\nx/a.png,Normal\n")


EXAMPLES: dict[str, Callable[[Path, object], None]] = {
    "covid": _covid,
    "folders": _folders,
    "manifest": _manifest,
    "segonly": _segonly,
}


def test_every_registered_layout_has_an_example() -> None:
    assert sorted(EXAMPLES) == LAYOUT_TYPES.names(), "add a minimal example for the new layout to EXAMPLES"


@pytest.mark.parametrize("name", LAYOUT_TYPES.names())
def test_layout_is_detected_and_loaded_on_its_own_kind_of_folder(name: str, tmp_path: Path, h) -> None:
    root = tmp_path / name
    EXAMPLES[name](root, h)
    assert get_layout(name).detect(root)
    assert detect_layout(root) == name
    for layout in (name, "auto"):
        ds = load_dataset(root, layout)
        assert ds.layout == name and ds.samples and ds.problems == []


@pytest.mark.parametrize("name", LAYOUT_TYPES.names())
def test_layout_forced_onto_a_plain_file_names_the_file(name: str, tmp_path: Path, h) -> None:
    path = h.write_image(tmp_path / "lonely.png", h.gradient())
    with pytest.raises(DatasetError, match="lonely.png"):
        get_layout(name).discover(path, [])
    assert not get_layout(name).detect(path)


def test_detection_priority_order() -> None:
    assert [layout.name for layout in detection_order()] == ["manifest", "covid", "segonly", "folders"]


def test_the_first_matching_layout_in_priority_order_wins(tmp_path: Path, h) -> None:
    root = tmp_path / "both"
    _segonly(root, h)  # images/ with images: the folders layout matches too
    assert get_layout("folders").detect(root)
    assert detect_layout(root) == "segonly"
    _covid(root, h)
    assert detect_layout(root) == "covid"
    _manifest(root, h)
    assert detect_layout(root) == "manifest"


def test_nothing_matches_lists_what_every_layout_expects(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images found in a known layout") as e:
        detect_layout(tmp_path / "empty")
    for layout in detection_order():
        assert layout.expected in str(e.value)


def test_unknown_layout_lists_the_valid_names(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown layout 'zip'") as e:
        load_dataset(tmp_path, "zip")
    assert str(e.value).endswith(", ".join(layout_names()))
    with pytest.raises(DatasetError, match="unknown layout 'zip'"):
        get_layout("zip")


def test_names_come_from_the_registry() -> None:
    assert LAYOUTS == layout_names() == ("auto", *LAYOUT_TYPES.names())
    from lungaudit.cli.cmd_data import LayoutChoice

    assert [c.value for c in LayoutChoice] == list(LAYOUTS)


def test_enum_from_builds_str_choices_and_refuses_bad_lists() -> None:
    Choice = enum_from(["auto", "grad-cam++"], "Choice")
    assert [c.value for c in Choice] == ["auto", "grad-cam++"]
    assert Choice("grad-cam++") == "grad-cam++" and isinstance(Choice("auto"), str)
    with pytest.raises(ValueError, match="repeated"):
        enum_from(["a", "a"], "Bad")
    with pytest.raises(ValueError, match="no choices"):
        enum_from([], "Bad")


def test_discover_reports_into_the_given_problem_list(tmp_path: Path, h) -> None:
    root = tmp_path / "c"
    _covid(root, h)
    (root / "Normal" / "images" / "notes.txt").write_text("x")
    problems: list[Problem] = []
    samples, names = get_layout("covid").discover(root, problems)
    assert len(samples) == 2 and [p.path.name for p in problems] == ["notes.txt"]
