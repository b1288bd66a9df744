"""Read and write the input format of the CAREER reference implementation (keyonvafa/career-code).

A CAREER directory holds, per split ``train``/``valid``/``test``, one line per worker in each file:
``<split>.job`` (space-separated occupation codes, one per year), ``<split>.year`` and
``<split>.education`` (aligned with the jobs), and one value per line in ``<split>.gender``,
``<split>.ethnicity``, ``<split>.location`` and (this project's addition) ``<split>.year_of_birth``.
Only ``.job`` and ``.year`` are required. The token ``unknown`` marks a missing covariate value;
values are single tokens, so :func:`write_career` writes spaces inside a value as ``_``. The split files
are the panel's given splits: a run keeps each worker in the split of its file.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from lit_career.errors import InputError
from lit_career.io import write_file_atomic
from lit_career.panel.careers import EDUCATION_LEVELS, CareerPanel, make_panel
from lit_career.panel.table import check_unique_person_years, parse_years
from lit_career.panel.taxonomy import CodeSystem, Crosswalk, UnknownCodePolicy, Vocabulary, map_codes

SPLITS = ("train", "valid", "test")
MISSING = "unknown"
STATIC_FILES = {"gender": "sex", "ethnicity": "race", "location": "location", "year_of_birth": "birth_year"}
# CAREER's education vocabulary (and this project's level names) to EDUCATION_LEVELS.
DEFAULT_EDUCATION_MAP = {level: level for level in EDUCATION_LEVELS} | {
    "high_school_diploma": "high_school",
    "ged": "high_school",
    "associates": "some_college",
    "masters": "graduate",
    "doctorate": "graduate",
    "professional": "graduate",
}


def read_career(
    directory: str | Path,
    *,
    code_system: CodeSystem | Crosswalk | None = None,
    unknown_codes: UnknownCodePolicy = "error",
    education_map: dict[str, str] | None = None,
    source: str = "CAREER",
    vocab: Vocabulary | None = None,
) -> CareerPanel:
    """Read every split present in ``directory``, given as the persons' splits; person ids are
    ``<split>-<line number>``.

    ``education_map`` maps education tokens to :data:`EDUCATION_LEVELS` (default
    :data:`DEFAULT_EDUCATION_MAP`); other tokens than ``unknown`` outside it are errors.
    """
    directory = Path(directory)
    education_map = DEFAULT_EDUCATION_MAP if education_map is None else education_map
    if not set(education_map.values()) <= set(EDUCATION_LEVELS):
        raise ValueError(
            f"education_map values must be in {EDUCATION_LEVELS}, got {sorted(set(education_map.values()))}"
        )
    present = [split for split in SPLITS if (directory / f"{split}.job").exists()]
    if not present:
        raise InputError(
            f"no CAREER split files ({', '.join(f'{s}.job' for s in SPLITS)}) found", file=str(directory)
        )
    parts = [
        _read_split(directory, split, (code_system, vocab), unknown_codes, education_map) for split in present
    ]
    removed = sum((Counter(p[2]) for p in parts), Counter())
    given = {split: f"career:{directory / f'{split}.job'}" for split in present}
    return make_panel(
        pd.concat([p[0] for p in parts]),
        pd.concat([p[1] for p in parts]),
        source,
        dict(removed),
        given,
        vocab,
    )


def write_career(
    panel: CareerPanel, directory: str | Path, *, split_names: Sequence[str] | None = None
) -> None:
    """Write ``panel`` as CAREER files, one file set per split in ``persons["split"]`` (``train`` if none).

    ``split_names`` selects the splits to write (default: all). Jobs are written as occ1990dd codes
    (special states as their 9xx codes), education as level names, missing values as ``unknown``;
    files of the same names are replaced, each atomically.
    """
    directory = Path(directory)
    persons = panel.persons
    splits = persons["split"] if "split" in persons else pd.Series("train", index=persons.index)
    if split_names is None and splits.isna().any():
        raise ValueError("some persons have no split: assign one or pass split_names")
    names = list(pd.unique(splits.dropna())) if split_names is None else list(split_names)
    if not set(names) <= set(SPLITS):
        raise ValueError(
            f"CAREER splits are {SPLITS}, got {names}: pass split_names to choose which to write"
        )
    records = panel.records
    lines = (
        pd.DataFrame(
            {
                "person_id": records["person_id"],
                "job": panel.vocab.codes[records["state"].to_numpy()].astype(str),
                "year": records["year"].astype(str),
                "education": records["education"].astype("string").fillna(MISSING),
            }
        )
        .groupby("person_id")[["job", "year", "education"]]
        .agg(" ".join)
    )
    statics = {ext: persons[col] for ext, col in STATIC_FILES.items() if ext != "year_of_birth"}
    if persons["birth_year"].notna().any():
        statics["year_of_birth"] = persons["birth_year"]
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        ids = persons.index[(splits == name).fillna(False).to_numpy()]
        if len(ids) == 0:
            continue
        files = {ext: lines.loc[ids, ext] for ext in lines.columns} | {
            ext: _token(values.loc[ids]) for ext, values in statics.items()
        }
        for ext, values in files.items():
            text = "".join(f"{v}\n" for v in values)
            write_file_atomic(
                directory / f"{name}.{ext}", lambda tmp, text=text: tmp.write_text(text, encoding="utf-8")
            )


def _read_split(directory: Path, split: str, coding, unknown_codes, education_map):
    """One split's records, persons and counts of what the unknown-code policy removed (``coding``: the
    code system and the vocabulary)."""
    code_system, vocab = coding
    job_file = directory / f"{split}.job"
    jobs = [line.split() for line in _read_lines(job_file)]
    if not jobs:
        raise InputError("file is empty", file=str(job_file), row=1, column="token 1")
    if blank := next((i for i, tokens in enumerate(jobs, 1) if not tokens), None):
        raise InputError("line has no occupation codes", file=str(job_file), row=blank, column="token 1")
    lengths = [len(tokens) for tokens in jobs]
    line = np.repeat(np.arange(1, len(jobs) + 1), lengths)
    token = np.concatenate([np.arange(1, n + 1) for n in lengths])
    ids = pd.Series([f"{split}-{i}" for i in line], dtype="string")
    year_file = directory / f"{split}.year"
    if not year_file.exists():
        raise InputError(f"missing {year_file.name}: CAREER files need years", file=str(job_file))
    year_tokens = pd.Series(_aligned(year_file, job_file, lengths))
    with _at_token(year_file, line, token) as pos:
        years = parse_years(year_tokens, file="", column="", rows=pos)
        records = pd.DataFrame({"person_id": ids, "year": years})
        check_unique_person_years(records, file="", column="", rows=pos)
    with _at_token(job_file, line, token) as pos:
        codes = pd.Series([code for tokens in jobs for code in tokens])
        records["state"], report = map_codes(codes, code_system, vocab=vocab, policy=unknown_codes, rows=pos)
    records["education"] = pd.NA
    education_file = directory / f"{split}.education"
    if education_file.exists():
        values = pd.Series(_aligned(education_file, job_file, lengths))
        bad = ~values.isin(education_map) & (values != MISSING)
        if bad.any():
            pos = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(
                f"education {values[pos]!r} is not one of {sorted(education_map)} (or {MISSING!r}); pass education_map",
                file=str(education_file),
                row=int(line[pos]),
                column=f"token {token[pos]}",
            )
        records["education"] = values.map(education_map)
    persons = pd.DataFrame({"split": pd.array([split] * len(jobs), dtype="string")}, index=ids.unique())
    for ext, col in STATIC_FILES.items():
        path = directory / f"{split}.{ext}"
        if path.exists():
            persons[col] = _static(path, job_file, len(jobs))
    if "birth_year" in persons:
        known = persons["birth_year"].dropna()
        rows = np.flatnonzero(persons["birth_year"].notna().to_numpy()) + 1
        persons["birth_year"] = parse_years(
            known, file=str(directory / f"{split}.year_of_birth"), column="token 1", rows=rows
        )
    removed = {"unknown occupation code": report.dropped} if report.dropped else {}
    if report.unmapped:
        removed["unknown occupation code mapped to 'unmapped' (kept)"] = report.unmapped
    return records[records["state"].notna()], persons, removed


@contextmanager
def _at_token(file: Path, line: np.ndarray, token: np.ndarray) -> Iterator[np.ndarray]:
    """Yield flat token positions as ``rows``; re-raise an InputError at its file, line and token."""
    try:
        yield np.arange(len(line))
    except InputError as err:
        raise InputError(
            err.message, file=str(file), row=int(line[err.row]), column=f"token {token[err.row]}"
        ) from None


def _aligned(path: Path, job_file: Path, lengths: list[int]) -> list[str]:
    """Tokens of a time-varying file, checked to align line by line with the jobs."""
    lines = [text.split() for text in _lines(path, job_file, len(lengths))]
    for row, (tokens, n) in enumerate(zip(lines, lengths, strict=True), 1):
        if len(tokens) != n:
            message = f"{len(tokens)} token(s) but {job_file.name} has {n} on this line"
            raise InputError(message, file=str(path), row=row, column=f"token {min(len(tokens), n) + 1}")
    return [t for tokens in lines for t in tokens]


def _static(path: Path, job_file: Path, n: int) -> list[str | None]:
    """One value per worker; ``unknown`` or an empty line is missing."""
    return [None if v.strip() in ("", MISSING) else v.strip() for v in _lines(path, job_file, n)]


def _lines(path: Path, job_file: Path, n: int) -> list[str]:
    """The lines of a per-worker file, checked to be one per line of the jobs."""
    lines = _read_lines(path)
    if len(lines) != n:
        message = f"{len(lines)} line(s) but {job_file.name} has {n} (one line per worker)"
        raise InputError(message, file=str(path), row=min(len(lines), n) + 1, column="token 1")
    return lines


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise InputError("file is not UTF-8 text", file=str(path)) from None


def _token(values: pd.Series) -> pd.Series:
    """Static values as single tokens: whitespace becomes ``_``, missing becomes ``unknown``."""
    return values.astype("string").str.replace(r"\s+", "_", regex=True).replace("", pd.NA).fillna(MISSING)
