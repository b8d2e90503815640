"""Train and evaluate CroBIM-U.

With no arguments: generate the synthetic benchmark once (``.cache/uncertainty_rrsis``), train the
``tiny`` CroBIM-U (Full) on it (CPU, or the GPU when there is one), evaluate the best-on-val
checkpoint on the synthetic test split, and write ``runs/default/`` (config, checkpoints, metrics,
log, panels).

Examples::

    uncertainty-rrsis train                                   # the embedded default
    uncertainty-rrsis train --config rrsisd --data-root /data/rrsisd \
        --vision-weights convnext_base.safetensors --text-weights ./bert-base-uncased   # the paper preset's recipe
    uncertainty-rrsis train --config rrsisd rows/base ...    # a Table V row
    uncertainty-rrsis train --config my_run.yaml              # options from a YAML/TOML file
    uncertainty-rrsis train --dataset rrsisd --data-root /data/rrsisd --preset paper \\
        --vision-weights convnext_base.safetensors --text-weights ./bert-base-uncased
    torchrun --nproc_per_node=8 -m uncertainty_rrsis.cli train --preset paper --dataset refsegrs --data-root ...
    uncertainty-rrsis train --resume                          # continue an interrupted run
    uncertainty-rrsis train --overwrite                       # delete runs/default's run, start again

``--batch-size`` is the TOTAL batch over all processes and accumulation steps. A run folder
belongs to one run: a folder that holds a run needs --resume or --overwrite (or another
--output-dir), and a folder in use by a running training is refused.
"""

from __future__ import annotations

from ..training import (
    CheckpointWriteError,
    RunFolderError,
    SettingsError,
    build_arg_parser,
    build_trainer,
    config_from_args,
    main_guard,
)


def main(argv: list[str] | None = None, *, prog: str | None = None) -> dict:
    parser = build_arg_parser(__doc__, prog=prog)
    try:
        config = config_from_args(parser.parse_args(argv))
    except ValueError as err:  # settings that cannot work: say which, with the usage line, no traceback
        parser.error(str(err))

    def body() -> dict:
        try:
            return build_trainer(config).fit()
        except (RunFolderError, SettingsError, CheckpointWriteError) as err:  # say so, no traceback
            raise SystemExit(f"error: {err}") from None

    return main_guard(body)

