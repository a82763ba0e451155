"""Scored images: the one result type of `dlsr-score`, the Ray Data job and the Ray Serve service.

One entry per input, in input order: the requested scores, the normalised headline score (1.0 =
the threshold) and the decision; an input that could not be read keeps its place with its error and
no scores. Each front end reads the same object its own way: `rows()` (CSV / JSON rows),
`columns()` (arrays, a Ray Data batch) and `results()` (the service's JSON per image)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np


@dataclass
class ScoredImages:
    """Scores of images, one entry per input (float NaN and error text where it could not be read)."""

    ids: List[str]
    names: List[str]  # the requested scores, in order
    columns: List[str]  # their output names (manifest.output_name), the rows' keys
    values: Dict[str, np.ndarray]  # score name -> float64 [N]
    headline: np.ndarray  # float64 [N]: the score the decision is made on
    normalized: np.ndarray  # float64 [N]
    is_ood: np.ndarray  # bool [N]
    errors: List[str]  # "" where the input was read

    @classmethod
    def of(cls, det, ids: Sequence[str], res: dict, names: Sequence[str], ok: Optional[np.ndarray] = None,
           errors: Optional[Sequence[str]] = None) -> "ScoredImages":  # fmt: skip
        """From a Detector's predict() output `res` on the readable inputs (`ok`, default all)."""
        n = len(ids)
        ok = np.ones(n, bool) if ok is None else np.asarray(ok, bool)

        def spread(x) -> np.ndarray:
            full = np.full(n, np.nan)
            if ok.any():
                full[ok] = np.asarray(x, np.float64)
            return full

        is_ood = np.zeros(n, bool)
        if ok.any():
            is_ood[ok] = np.asarray(res["is_ood"], bool)
        return cls(
            ids=[str(i) for i in ids],
            names=list(names),
            columns=[det.manifest.output_name(x) for x in names],
            values={x: spread(res[x]) if ok.any() else np.full(n, np.nan) for x in names},
            headline=spread(res["score"]) if ok.any() else np.full(n, np.nan),
            normalized=spread(res["normalized"]) if ok.any() else np.full(n, np.nan),
            is_ood=is_ood,
            errors=[str(e) for e in errors] if errors is not None else [""] * n,
        )

    @classmethod
    def from_columns(cls, batch: Dict[str, np.ndarray], columns: Sequence[str]) -> "ScoredImages":
        """Back from `columns()` (a Ray Data batch: id, the score columns, normalized, is_ood, error)."""
        return cls(
            ids=[str(i) for i in batch["id"]],
            names=list(columns),
            columns=list(columns),
            values={c: np.asarray(batch[c], np.float64) for c in columns},
            headline=np.full(len(batch["id"]), np.nan),
            normalized=np.asarray(batch["normalized"], np.float64),
            is_ood=np.asarray(batch["is_ood"], bool),
            errors=[str(e) for e in batch["error"]],
        )

    def __len__(self) -> int:
        return len(self.ids)

    def row(self, i: int, image: Optional[str] = None) -> dict:
        """One input's row: image, the score columns, normalized, is_ood, error (None scores on error)."""
        err = self.errors[i]
        row = {"image": self.ids[i] if image is None else image}
        row.update({c: None if err else float(self.values[x][i]) for c, x in zip(self.columns, self.names)})
        row["normalized"] = None if err else float(self.normalized[i])
        row["is_ood"] = None if err else bool(self.is_ood[i])
        row["error"] = err
        return row

    def rows(self) -> List[dict]:
        """The CSV / JSON rows of dlsr-score and the Ray job's shards, in input order."""
        return [self.row(i) for i in range(len(self))]

    def columns_dict(self) -> Dict[str, np.ndarray]:
        """Arrays (a Ray Data batch): the score columns and normalized as float32 (NaN on error),
        is_ood as bool, error as text."""
        out = {c: self.values[x].astype(np.float32) for c, x in zip(self.columns, self.names)}
        out["normalized"] = self.normalized.astype(np.float32)
        out["is_ood"] = self.is_ood.copy()
        out["error"] = np.asarray(self.errors, dtype=object)
        return out

    def results(self) -> List[dict]:
        """The service's JSON per image: score (the headline), normalized, is_ood, scores {name: value}."""
        return [
            {
                "score": float(self.headline[i]),
                "normalized": float(self.normalized[i]),
                "is_ood": bool(self.is_ood[i]),
                "scores": {x: float(self.values[x][i]) for x in self.names},
            }
            for i in range(len(self))
        ]
