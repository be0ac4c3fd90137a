"""Parameters and multiply-accumulates per image of every model in the zoo, at its standard resolution.

    python -m bench.model_costs                 # the lecture's models, a Markdown table
    python -m bench.model_costs resnet50 vgg16  # some

Prints the README's table; the counting is `visionax.models.costs` (see its docstring for what is
counted and how).
"""

from __future__ import annotations

import sys

from visionax.models import input_size
from visionax.models.costs import (PARAMS_SOURCE, PUBLISHED, forward_macs, jaxpr_macs,  # noqa: F401
                                   param_count, xla_macs)

# jaxpr_macs is re-exported for bench/train_step.py, which imports it from here.


def main(names) -> None:
    print("| model | input | params | weights (MB, f32) | GMACs | GMACs (XLA) | published GMACs "
          "| source |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for name in names:
        published, source = PUBLISHED.get(name, (None, ""))
        params = param_count(name)
        print(f"| {name} | {input_size(name)} | {params:,} | {params * 4 / 1e6:.0f} "
              f"| {forward_macs(name) / 1e9:.3f} | {xla_macs(name) / 1e9:.3f} "
              f"| {'—' if published is None else published} "
              f"| params: {PARAMS_SOURCE.get(name, 'torchvision')}; GMACs: {source} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or list(PUBLISHED))
