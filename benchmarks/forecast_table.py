"""The README's forecast table from finished forecast folders (``python -m lit_career forecast``).

Run: ``python benchmarks/forecast_table.py --baseline FOLDER FOLDER...`` (the ``--baseline``, Markov-1, gives the
gains). Per folder: paths per person, the mean log score of every forecast person-year (perplexity), its gain
over the baseline in the first forecast year at least 5 years ahead, the no-job and switch AUCs, the share of
person-years whose realized group is in the 90% set and of shares inside their 90% interval, and, for a forecast
run with ``--reference``, the years whose no-job share lies inside the reference's interval. Prints a Markdown
table, one column per folder.
"""

import argparse
import json
from pathlib import Path

import pandas as pd


def summary(folder: Path, baseline: pd.DataFrame) -> dict[str, str]:
    """One forecast's column of the table."""
    metrics = json.loads((folder / "metrics.json").read_text())
    table = pd.read_csv(folder / "by_year.csv", dtype={"year": str, "horizon": str})
    overall = table[table["year"] == "all"].iloc[0]
    years = table[table["year"] != "all"].astype({"horizon": int})
    five = years[years["horizon"] >= 5].iloc[0]
    gain = five["log_score"] - baseline.loc[five["year"], "log_score"]
    column = {
        "row": metrics["row"],
        "paths per person": f"{metrics['paths']:,}",
        "log score, all years (ppl)": f"{overall['log_score']:.3f} ({overall['perplexity']:.1f})",
        "gain over the baseline, 5+ years ahead": f"{gain:+.3f} ({five['year']})",
        "no-job AUC / switch AUC": f"{overall['no_job_auc']:.3f} / {overall['switch_auc']:.3f}",
        "realized group in the 90% set / shares inside": f"{overall['coverage']:.3f} / {metrics['shares_inside']:.3f}",
    }
    if "reference" in metrics:
        shares = pd.read_csv(folder / "shares.csv")
        no_job = shares[shares["category"] == "No job reported"]
        column["no-job share inside the reference's band"] = (
            f"{int(no_job['inside_reference'].sum())} of {len(no_job)} years"
        )
    return column


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folders", type=Path, nargs="+")
    parser.add_argument("--baseline", type=Path, required=True, help="forecast folder the gains are over")
    args = parser.parse_args()
    baseline = pd.read_csv(args.baseline / "by_year.csv", dtype={"year": str}).set_index("year")
    columns = [summary(folder, baseline) for folder in args.folders]
    keys = list(dict.fromkeys(k for column in columns for k in column))
    print("| | " + " | ".join(column["row"] for column in columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for key in keys[1:]:
        print(f"| {key} | " + " | ".join(column.get(key, "–") for column in columns) + " |")


if __name__ == "__main__":
    main()
