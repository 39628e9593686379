"""Report history on the device: one SQLite file (history.sqlite3) in the app's data folder, nothing leaves
the device. Device-safe: stdlib only.

    store = HistoryStore(data_dir / "history.sqlite3")
    rid = store.add(report, images={"frontal": png_bytes}, thumbnail=png_bytes)
    for item in store.list(): ...          # newest first, without the large columns
    saved = store.get(rid)                 # Report (runtime.report, edgecap-report/1) + display images

Each row keeps the whole report as edgecap-report/1 JSON (attention included, so the heatmap can be
redrawn), the display copies of the images (PNG, long side <= heatmap.DISPLAY_SIDE) so a report stays
readable after the original file is moved, and a small thumbnail. A SQLite connection belongs to the
thread that opened it: the app uses the store from the UI thread only (inserts are a few milliseconds).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from edgecap.runtime.report import Report

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,            -- UTC, ISO 8601
    frontal_name TEXT NOT NULL,       -- the input as given (a path, or a description)
    lateral_name TEXT,
    text TEXT NOT NULL,               -- report.text; '' when flagged (withheld)
    flagged INTEGER NOT NULL,         -- report.flagged (not a chest X-ray?)
    warnings INTEGER NOT NULL,        -- number of warnings
    bundle TEXT NOT NULL,             -- bundle folder used
    total_ms REAL NOT NULL,
    report_json TEXT NOT NULL,        -- edgecap-report/1
    thumbnail BLOB NOT NULL,          -- PNG, long side <= heatmap.THUMB_SIDE
    frontal_png BLOB NOT NULL,        -- PNG display copy
    lateral_png BLOB
);
CREATE INDEX IF NOT EXISTS reports_created ON reports (created);
"""


@dataclass(frozen=True)
class HistoryItem:
    """One row of the history list (no large columns but the thumbnail)."""

    id: int
    created: str
    frontal_name: str
    lateral_name: str | None
    text: str
    flagged: bool
    warnings: int
    bundle: str
    total_ms: float
    thumbnail: bytes

    @property
    def created_local(self) -> str:
        """'2025-01-31 14:05' in the device's time zone."""
        try:
            return datetime.fromisoformat(self.created).astimezone().strftime("%Y-%m-%d %H:%M")
        except ValueError:
            return self.created


@dataclass(frozen=True)
class SavedReport:
    item: HistoryItem
    report: Report
    images: dict[str, bytes]  # view -> PNG display copy


class HistoryStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path))
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            self.db.close()
            raise RuntimeError(f"{self.path}: history made by a newer edgecap (schema {version} > {SCHEMA_VERSION})")
        with self.db:
            self.db.executescript(_SCHEMA)
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def add(self, report: Report, images: dict[str, bytes], thumbnail: bytes) -> int:
        """Save one report with its display images (PNG bytes per view) and thumbnail; -> its id."""
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self.db:
            cur = self.db.execute(
                "INSERT INTO reports (created, frontal_name, lateral_name, text, flagged, warnings, bundle, total_ms,"
                " report_json, thumbnail, frontal_png, lateral_png) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    created,
                    report.inputs.get("frontal") or "",
                    report.inputs.get("lateral"),
                    "" if report.flagged else report.text,  # a flagged study has no report (runtime.report)
                    int(report.flagged),
                    len(report.warnings),
                    str(report.bundle.get("path", "")),
                    float(report.timings.get("total_ms", 0.0)),
                    report.to_json(),
                    sqlite3.Binary(thumbnail),
                    sqlite3.Binary(images["frontal"]),
                    sqlite3.Binary(images["lateral"]) if images.get("lateral") else None,
                ),
            )
        return int(cur.lastrowid)

    _ITEM = "id, created, frontal_name, lateral_name, text, flagged, warnings, bundle, total_ms, thumbnail"

    def list(self, limit: int = 500) -> list[HistoryItem]:
        """Newest first."""
        rows = self.db.execute(f"SELECT {self._ITEM} FROM reports ORDER BY id DESC LIMIT ?", (limit,))
        return [_item(r) for r in rows]

    def get(self, report_id: int) -> SavedReport | None:
        row = self.db.execute(
            f"SELECT {self._ITEM}, report_json, frontal_png, lateral_png FROM reports WHERE id = ?", (report_id,)
        ).fetchone()
        if row is None:
            return None
        images = {"frontal": bytes(row[11])}
        if row[12] is not None:
            images["lateral"] = bytes(row[12])
        return SavedReport(_item(row[:10]), Report.from_json(row[10]), images)

    def delete(self, report_id: int) -> None:
        with self.db:
            self.db.execute("DELETE FROM reports WHERE id = ?", (report_id,))

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM reports").fetchone()[0])

    def close(self) -> None:
        self.db.close()


def _item(r) -> HistoryItem:
    return HistoryItem(
        id=int(r[0]),
        created=r[1],
        frontal_name=r[2],
        lateral_name=r[3],
        text=r[4],
        flagged=bool(r[5]),
        warnings=int(r[6]),
        bundle=r[7],
        total_ms=float(r[8]),
        thumbnail=bytes(r[9]),
    )
