"""The bench's one table: each figure with its target and whether it is met, printed aligned and
written as JSON. Figures of one subject (a type's happy path, one handler's import) share a row."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

COLUMNS = ("section", "subject", "figures", "targets", "result")


@dataclass(frozen=True)
class Figure:
    section: str
    subject: str
    label: str  # short, as it reads after the value: "transitions", "ms p50", "$ per 1k"
    value: float | int | str
    target: str = ""  # e.g. "≤ 12"; empty when the figure is reported without one
    ok: bool | None = None  # None: no target
    # How the value is printed; the JSON keeps the value itself.
    shown: str = ""

    def text(self) -> str:
        """The value as it reads in the table, marked ✗ when it misses its target."""
        return f"{self.shown or _plain(self.value)} {self.label}".strip() + (" ✗" if self.ok is False else "")


def _plain(value: float | int | str) -> str:
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{int(value):,}" if isinstance(value, int | float) else value


def at_most(section: str, subject: str, label: str, value: float, limit: float, shown: str = "") -> Figure:
    return Figure(section, subject, label, value, f"{label} ≤ {_plain(limit)}", value <= limit, shown)


def info(section: str, subject: str, label: str, value: float | int | str, shown: str = "") -> Figure:
    return Figure(section, subject, label, value, shown=shown)


def rows(figures: Iterable[Figure]) -> list[dict[str, str]]:
    """One row per (section, subject), its figures side by side, in the order they came."""
    grouped: dict[tuple[str, str], list[Figure]] = {}
    for figure in figures:
        grouped.setdefault((figure.section, figure.subject), []).append(figure)
    table = []
    for (section, subject), members in grouped.items():
        checked = [f for f in members if f.ok is not None]
        result = "—" if not checked else ("ok" if all(f.ok for f in checked) else "MISSED")
        table.append(
            {
                "section": section,
                "subject": subject,
                "figures": " · ".join(f.text() for f in members),
                "targets": " · ".join(f.target for f in checked) or "—",
                "result": result,
            }
        )
    return table


def render(table: list[dict[str, str]]) -> str:
    """A markdown table, its columns aligned."""
    widths = {column: max(len(column), *(len(row[column]) for row in table)) for column in COLUMNS}

    def line(cells: dict[str, str]) -> str:
        return "| " + " | ".join(cells[column].ljust(widths[column]) for column in COLUMNS) + " |"

    header = line({column: column for column in COLUMNS})
    rule = "|" + "|".join("-" * (widths[column] + 2) for column in COLUMNS) + "|"
    return "\n".join([header, rule, *(line(row) for row in table)])


def write_json(path: Path, figures: list[Figure], notes: list[str], details: dict[str, Any]) -> None:
    document = {
        **details,
        "table": rows(figures),
        "figures": [asdict(figure) for figure in figures],
        "notes": notes,
    }
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
