#!/usr/bin/python3
"""Charts of a sweep's CSV (experiments/sweep.cpp, docs/sweeps.md), as PNG files.

    scripts/plot_sweep.py results/ablation.csv                    -> results/ablation_*.png
    scripts/plot_sweep.py results/ablation.csv --out-dir docs/images --name ablation

For each swept hyper-parameter (a column taking more than one value, the seed aside) it draws the
final error against that hyper-parameter, one line per variant; the other swept hyper-parameters
stay at the variant's best configuration (lowest mean final error over seeds and layers). It also
draws each variant's best configuration as a bar. A point is the mean over seeds of the mean over
layers; its error bar is the sample standard deviation of those per-seed means (the spread over
seeds). Colours follow the estimator, line styles the schedule, markers the grid.

Needs python3-matplotlib (Debian), hence the system interpreter /usr/bin/python3 (a python3 earlier
on PATH, such as pyenv's, does not see Debian's packages); reads the CSV with the standard library.
"""
import argparse
import csv
import os
import statistics
import sys
from collections import defaultdict

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit("plot_sweep.py: matplotlib is missing (Debian: apt-get install python3-matplotlib)")

NUMERIC = {"tau_start", "tau_end", "kappa_start", "kappa_end", "lr_logits", "lr_scales", "steps", "seed", "group"}


def read_records(path):
    """The CSV's records and its hyper-parameter columns (those between 'variant' and 'layer')."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        if "variant" not in columns or "layer" not in columns or "final_error" not in columns:
            sys.exit(f"plot_sweep.py: {path} is not a sweep CSV (no variant, layer or final_error column)")
        axes = columns[columns.index("variant") + 1:columns.index("layer")]
        records = []
        for row in reader:
            if None in row or any(value is None for value in row.values()):
                continue  # a torn last line: the sweep repairs it on its next start
            try:
                row["final_error"] = float(row["final_error"])
                for axis in axes:
                    if axis in NUMERIC:
                        row[axis] = float(row[axis])
            except ValueError:
                continue
            records.append(row)
    if not records:
        sys.exit(f"plot_sweep.py: {path} holds no records")
    return records, axes


def seed_spread(records):
    """Mean and spread over seeds of the per-seed mean over layers."""
    by_seed = defaultdict(list)
    for record in records:
        by_seed[record["seed"]].append(record["final_error"])
    means = [statistics.fmean(errors) for errors in by_seed.values()]
    return statistics.fmean(means), (statistics.stdev(means) if len(means) > 1 else 0.0)


def configuration(record, axes):
    return tuple(record[axis] for axis in axes if axis != "seed")


def best_configurations(records, axes):
    """Per variant, the configuration with the lowest mean final error over seeds and layers."""
    errors = defaultdict(list)
    for record in records:
        errors[(record["variant"], configuration(record, axes))].append(record["final_error"])
    best = {}
    for (variant, config), values in errors.items():
        mean = statistics.fmean(values)
        if variant not in best or mean < best[variant][1]:
            best[variant] = (config, mean)
    return {variant: config for variant, (config, _) in best.items()}


def style_of(variant, names):
    """Colour by estimator, line style by schedule, marker by grid (names are estimator-schedule-grid)."""
    parts = variant.split("-")
    if len(parts) != 3:
        return {"color": f"C{names.index(variant) % 10}", "linestyle": "-", "marker": "o"}
    estimators = sorted({n.split("-")[0] for n in names if n.count("-") == 2})
    schedules = sorted({n.split("-")[1] for n in names if n.count("-") == 2})
    grids = sorted({n.split("-")[2] for n in names if n.count("-") == 2})
    return {"color": f"C{estimators.index(parts[0]) % 10}",
            "linestyle": ["-", "--", ":", "-."][schedules.index(parts[1]) % 4],
            "marker": "osD^v<>"[grids.index(parts[2]) % 7]}


def plot_axis(records, axes, axis, best, path):
    variants = sorted(best)
    config_axes = [a for a in axes if a != "seed"]
    others = [i for i, a in enumerate(config_axes) if a != axis]
    values = sorted({record[axis] for record in records})
    fig, ax = plt.subplots(figsize=(8, 5))
    for variant in variants:
        xs, ys, spreads = [], [], []
        for value in values:
            chosen = [r for r in records if r["variant"] == variant and r[axis] == value
                      and all(configuration(r, axes)[i] == best[variant][i] for i in others)]
            if chosen:
                mean, spread = seed_spread(chosen)
                xs.append(value), ys.append(mean), spreads.append(spread)
        if xs:
            ax.errorbar(xs, ys, yerr=spreads, label=variant, capsize=3, **style_of(variant, variants))
    numeric = axis in NUMERIC
    if numeric and min(values) > 0 and max(values) / min(values) >= 20:
        ax.set_xscale("log")
    elif numeric and len(values) <= 10:
        ax.set_xticks(values)
    ax.set_xlabel(axis)
    ax.set_ylabel("final relative Hessian error")
    ax.set_title(f"final error against {axis} (other swept values at each variant's best)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(variants) > 12 else 1, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_variants(records, axes, best, path):
    rows = []
    for variant, config in best.items():
        chosen = [r for r in records if r["variant"] == variant and configuration(r, axes) == config]
        mean, spread = seed_spread(chosen)
        start = statistics.fmean(float(r["init_error"]) for r in chosen)
        rows.append((mean, spread, start, variant))
    rows.sort()
    names = [row[3] for row in rows]
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(rows) + 2), 5))
    for i, (mean, spread, start, variant) in enumerate(rows):
        ax.bar(i, mean, yerr=spread, capsize=3, color=style_of(variant, names)["color"])
        ax.plot([i - 0.4, i + 0.4], [start, start], color="black", linewidth=1)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("final relative Hessian error")
    ax.set_title("each variant at its best configuration (black: starting point)")
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description="PNG charts of a sweep CSV (see the module comment).")
    parser.add_argument("csv", help="PREFIX.csv written by sweep")
    parser.add_argument("--out-dir", help="where the PNG files go (default: beside the CSV)")
    parser.add_argument("--name", help="file name prefix of the charts (default: the CSV's name)")
    args = parser.parse_args()
    records, axes = read_records(args.csv)
    out_dir = args.out_dir or os.path.dirname(os.path.abspath(args.csv))
    name = args.name or os.path.splitext(os.path.basename(args.csv))[0]
    os.makedirs(out_dir, exist_ok=True)
    best = best_configurations(records, axes)
    swept = [axis for axis in axes if axis != "seed" and len({r[axis] for r in records}) > 1]
    written = []
    for axis in swept:
        written.append(os.path.join(out_dir, f"{name}_{axis}.png"))
        plot_axis(records, axes, axis, best, written[-1])
    written.append(os.path.join(out_dir, f"{name}_variants.png"))
    plot_variants(records, axes, best, written[-1])
    for path in written:
        print(path)


if __name__ == "__main__":
    main()
