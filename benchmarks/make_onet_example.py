"""Write the O*NET-SOC 2010 example panel: bundled NLSY79 persons recoded from occ1990dd to O*NET-SOC 2010.

Each occ1990dd occupation becomes the first O*NET-SOC code the bundled crosswalk
(``resources/occupations/onetsoc2010_to_occ1990dd.csv``) maps to it; the occupations no O*NET code maps to
become ``unmapped``, and the special states keep their keys (``no_job``, ...). The persons are a seeded
draw, so the file is the same on every run:

    python benchmarks/make_onet_example.py --persons 300 --out configs/rows/onet_example/panel.csv
"""

from __future__ import annotations

import argparse
from importlib.resources import files

import numpy as np
import pandas as pd

from lit_career.panel.careers import subsample_persons
from lit_career.panel.nlsy79 import load_nlsy79
from lit_career.panel.taxonomy import vocabulary

COVARIATES = ["education", "birth_year", "sex", "race"]


def first_onet_code() -> dict[str, str]:
    """Each occ1990dd code (a string) to the first O*NET-SOC 2010 code the bundled crosswalk maps to it."""
    path = files("lit_career.resources").joinpath("occupations", "onetsoc2010_to_occ1990dd.csv")
    with path.open("rb") as f:
        pairs = pd.read_csv(f, dtype=str).drop_duplicates("occ1990dd")
    return dict(zip(pairs["occ1990dd"], pairs["onetsoc2010"], strict=True))


def onet_panel(persons: int) -> pd.DataFrame:
    """``persons`` NLSY79 persons (seeded draw) as a long table coded in O*NET-SOC 2010."""
    panel = subsample_persons(load_nlsy79(), persons)
    states = vocabulary().table.iloc[panel.records["state"].to_numpy()]
    onet = states["code"].astype(str).map(first_onet_code()).fillna("unmapped")
    codes = np.where(states["is_special"], states["key"], onet)
    records = panel.records.assign(occupation=codes)[["person_id", "year", "occupation", "education"]]
    statics = panel.persons[COVARIATES[1:]].reset_index()
    return records.merge(statics, on="person_id", validate="many_to_one")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=300)
    parser.add_argument("--out", default="configs/rows/onet_example/panel.csv")
    args = parser.parse_args()
    table = onet_panel(args.persons)
    table.to_csv(args.out, index=False)
    unmapped = int(table["occupation"].eq("unmapped").sum())
    print(f"{args.out}: {table['person_id'].nunique()} persons, {len(table)} rows, {unmapped} unmapped")


if __name__ == "__main__":
    main()
