"""bf16 against fp32 on a real recipe: is the precision's effect within the seed spread?

Usage:
    python benchmarks/precision_runs.py --reference RUN_FP32_SEED0 \
        --candidate RUN_BF16_SEED0 --other-seed RUN_BF16_SEED1 [--mig-steps 2000] [--json F]

Three run folders of one recipe: the reference in fp32 and the candidate in bf16 with the
same seed (same initial weights, batch order and posterior noise: every draw is a
function of (seed, step)), and a run in the candidate's precision with another seed.
For every loss term in the three histories, at every step they share, it prints the
precision's effect |candidate - reference| next to the seed-to-seed difference
|candidate - other seed|, and the same for the histogram MIG of the snapshots kept at
``--mig-steps`` (10,000 images, as the sweeps' curves). Per quantity it reports at how
many steps the precision's effect is at most the seed-to-seed difference, and the largest
of each over the steps. The runs may still be training: only what they have written is read,
and nothing is written into them.
"""

import argparse
import json
import math
import os

from tcvae_tf import curves, runs

TERMS = ("loss", "reconstruction", "kl", "minibatch_mi", "minibatch_tc", "minibatch_dwkl")


def describe(run_dir):
    train = runs.read_config(run_dir)["train"]
    return (f"{os.path.basename(os.path.normpath(run_dir))} ({train['objective']}, "
            f"{train['precision']}, seed {train['seed']})")


def common_rows(folders):
    """{step: [row of each run]} for the steps every history has."""
    histories = [{row["step"]: row for row in runs.read_history(folder)} for folder in folders]
    steps = sorted(set.intersection(*(set(history) for history in histories)))
    return {step: [history[step] for history in histories] for step in steps}


def comparison(values_by_step):
    """Rows (step, reference, candidate, other, precision effect, seed difference) and the
    verdict of one quantity; values_by_step: {step: (reference, candidate, other)}."""
    rows, effects, spreads = [], [], []
    for step, (reference, candidate, other) in sorted(values_by_step.items()):
        effect, spread = abs(candidate - reference), abs(candidate - other)
        rows.append((step, reference, candidate, other, effect, spread))
        effects.append(effect)
        spreads.append(spread)
    verdict = None
    if rows:
        verdict = {"largest_precision_effect": max(effects),
                   "largest_seed_difference": max(spreads),
                   "steps_within": sum(e <= s for e, s in zip(effects, spreads, strict=True)),
                   "steps": len(rows)}
    return rows, verdict


def markdown(name, rows, verdict):
    lines = [f"### {name}", "",
             "| step | fp32 (reference) | bf16 (candidate) | bf16, other seed | "
             "precision effect | seed difference |",
             "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {step} | {a:.4g} | {b:.4g} | {c:.4g} | {e:.3g} | {s:.3g} |"
              for step, a, b, c, e, s in rows]
    if verdict:
        lines += ["", f"The precision's effect is within the seed difference at "
                      f"{verdict['steps_within']} of {verdict['steps']} steps; largest effect "
                      f"{verdict['largest_precision_effect']:.3g}, largest seed difference "
                      f"{verdict['largest_seed_difference']:.3g}.", ""]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, help="fp32 run, seed s")
    parser.add_argument("--candidate", required=True, help="bf16 run, seed s")
    parser.add_argument("--other-seed", required=True, help="bf16 run, another seed")
    parser.add_argument("--mig-steps", default="",
                        help="comma-separated snapshot steps to measure (histogram MIG)")
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args()
    folders = [args.reference, args.candidate, args.other_seed]

    print("Runs: " + "; ".join(describe(folder) for folder in folders) + "\n")
    report = {"runs": [describe(folder) for folder in folders], "terms": {}}
    shared = common_rows(folders)
    for term in TERMS:
        values = {step: tuple(row.get(term, math.nan) for row in rows)
                  for step, rows in shared.items()}
        values = {step: v for step, v in values.items() if not any(map(math.isnan, v))}
        rows, verdict = comparison(values)
        report["terms"][term] = {"rows": rows, "verdict": verdict}
        print(markdown(term, rows, verdict))
    steps = [int(step) for step in args.mig_steps.split(",") if step.strip()]
    if steps:
        migs = [{row["step"]: row["mig_histogram"] for row in curves.snapshot_migs(folder, steps)}
                for folder in folders]
        rows, verdict = comparison({step: tuple(mig[step] for mig in migs) for step in steps})
        report["mig_histogram"] = {"rows": rows, "verdict": verdict}
        print(markdown("histogram MIG (snapshots, 10,000 images)", rows, verdict))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=1)


if __name__ == "__main__":
    main()
