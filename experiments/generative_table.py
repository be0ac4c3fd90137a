"""Lecture 12's three families side by side, from the `results.json` of finished runs on the same data:

    python -m experiments.generative_table runs/pixelcnn runs/vae runs/gan

prints one Markdown table (the README's) with every model of every workdir: its test negative
log-likelihood in bits per dimension and what kind of number that is (exact for the autoregressive
models; the importance-weighted estimate for the VAE, its bound beside it; none for the GAN), the
number of samples scored and their Fréchet distance and classifier score (in the features of the
classifier each run names: pass the same `--config.classifier_from` to every run, and draw as many
samples from each, for numbers that compare; the Fréchet distance is biased upwards at few
samples), how many classes its samples cover, and its training and sampling times. Trains nothing.
"""

from __future__ import annotations

import pathlib
import sys
from typing import Sequence

from visionax import cli
from visionax.errors import UserError
from visionax.generative.autoregressive import LABELS
from visionax.report import RESULTS_FILE, read_results

COLUMNS = ("model", "test bits/dim", "bits/dim is", "samples scored", "Fréchet distance", "classifier score",
           "classes covered",
           "training seconds", "sampling ms/image", "parameters")


def _number(value, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def model_rows(results: dict) -> list[list[str]]:
    """One row of `COLUMNS` per model of one experiment's results."""
    rows = []
    for name, numbers in results["models"].items():
        if "negative_elbo_bits_per_dim" in numbers:
            kind = f"importance-weighted estimate (bound: {numbers['negative_elbo_bits_per_dim']:.3f})"
        elif numbers["test_bits_per_dim"] is None:
            kind = "none (no likelihood)"
        else:
            kind = "exact"
        histogram = numbers["class_histogram"]
        rows.append([LABELS.get(name, name), _number(numbers["test_bits_per_dim"], 3), kind, f"{sum(histogram):,}",
                     _number(numbers["frechet_distance"], 2), _number(numbers["classifier_score"], 2),
                     f"{sum(count > 0 for count in histogram)} of {len(histogram)}",
                     _number(numbers["training_seconds"], 0),
                     _number(1000 * numbers["sampling_seconds_per_image"], 3), f"{numbers['parameters']:,}"])
    return rows


def markdown(workdirs: Sequence[str | pathlib.Path]) -> str:
    """The table of every model of every workdir's results.json, then the uniform bound."""
    rows, uniform = [], set()
    for workdir in workdirs:
        if not (pathlib.Path(workdir) / RESULTS_FILE).is_file():
            raise UserError(f"{str(workdir)!r} holds no {RESULTS_FILE}; pass the --workdir of a finished "
                            "pixelcnn, vae or gan run")
        results = read_results(workdir)
        if "models" not in results:
            raise UserError(f"{str(workdir)!r} is not the workdir of a pixelcnn, vae or gan run (its {RESULTS_FILE} "
                            "has no models)")
        rows += model_rows(results)
        uniform.add(round(results["uniform_bits_per_dim"], 6))
    if len(uniform) != 1:
        raise UserError(f"the runs are on data of different levels (uniform bounds {sorted(uniform)} bits/dim); "
                        "pass runs on the same data")
    rows.append(["uniform distribution", f"{uniform.pop():.3f}", "exact (the bound to beat)"] + ["—"] * 7)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" if index < 3 else "---:"
                                                             for index in range(len(COLUMNS))) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def main(argv: Sequence[str]) -> None:
    if len(argv) < 2 or any(argument.startswith("-") for argument in argv[1:]):
        cli.fail("usage: python -m experiments.generative_table <workdir> [<workdir> ...] (the --workdir of "
                 "finished pixelcnn, vae and gan runs on the same data)")
    try:
        print(markdown(argv[1:]))
    except UserError as error:
        cli.fail(str(error))


if __name__ == "__main__":
    main(sys.argv)
