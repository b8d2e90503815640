"""Training and evaluation of the reference model, used by ``examples/``.

One home per concern:

- :mod:`.config` -- :class:`TrainConfig` (training settings) and the one precedence order:
  command-line flags > config files > preset recipe > preset defaults; :mod:`.cli` -- its
  command line and config files;
- :mod:`.build` -- :func:`build_trainer`: every part of a run built from a ``TrainConfig`` (model,
  criterion, datasets), checked before anything is written;
- :mod:`.setup` -- what a run needs: the tokenizer, the datasets (through the registry of
  :mod:`uncertainty_rrsis.data`), the data folder, the checks of settings, seeds, the environment;
- :mod:`.trainer` -- the :class:`Trainer` that fits the parts it is handed; :mod:`.step` -- one
  optimizer step; :mod:`.resume` -- continuing a run;
- :mod:`.evaluation` -- :func:`evaluate` (the field's metrics, exact under DDP, no Trainer
  needed), the text-blanked evaluation, the report and the panels;
- :mod:`.run_folder` -- one run per folder: the files of a run, the policy that decides who may
  write there, the settings a resume compares; :mod:`.lock` -- the folder's lock;
- :mod:`.checkpoint`, :mod:`.distributed`, :mod:`.schedule`, :mod:`.signals`, :mod:`.run_log`.
"""

from .build import build_criterion, build_trainer, check_splits
from .checkpoint import (
    CheckpointWriteError,
    atomic_write_text,
    find_checkpoint,
    load_trainer_state,
    read_weights,
    save_checkpoint,
)
from .cli import (
    BUNDLED_CONFIGS,
    build_arg_parser,
    bundled_configs,
    checkpoint_settings,
    config_files,
    config_from_args,
    load_config_file,
    resolve_config_file,
)
from .config import (
    DEFAULT_RECIPE,
    MODEL_SHORTCUTS,
    PRECISIONS,
    RESUME_MAY_CHANGE,
    RESUME_MAY_CHANGE_MODEL,
    SELECT_METRICS,
    TrainConfig,
    build_model_config,
    merge_settings,
)
from .distributed import (
    DistEnv,
    EpochSampler,
    ShardedSampler,
    broadcast_from_main,
    broadcast_state,
    cleanup_distributed,
    init_distributed,
    main_guard,
    per_rank_batch,
)
from .evaluation import (
    PROTOCOL,
    blank_sentences,
    evaluate,
    evaluation_loader,
    final_report,
    format_breakdown,
    format_metrics,
    format_reliability,
    format_uncertainty,
    forward_batch,
    save_panels,
    split_names,
    text_cost,
    unwrap_model,
    write_metrics,
)
from .lock import RunFolderError, RunLock
from .run_log import PhaseTimes, RunLog
from .schedule import poly_schedule, total_steps
from .setup import (
    SettingsError,
    SplitDatasets,
    autocast_dtype,
    build_dataset,
    check_vision_weights,
    environment_info,
    frozen_text_encoder,
    load_tokenizer,
    prepare_data_root,
    resolve_num_workers,
    resolve_precision,
    seed_everything,
    tokenizer_from_training_sentences,
)
from .signals import StopOnSignal
from .trainer import Trainer

__all__ = [
    # settings
    "TrainConfig", "DEFAULT_RECIPE", "MODEL_SHORTCUTS", "build_arg_parser", "config_from_args",
    "load_config_file", "resolve_config_file", "bundled_configs", "BUNDLED_CONFIGS",
    "checkpoint_settings", "merge_settings", "config_files", "RESUME_MAY_CHANGE",
    "RESUME_MAY_CHANGE_MODEL",
    "PRECISIONS", "SELECT_METRICS", "build_model_config",
    # building a run
    "build_trainer", "build_criterion", "check_splits",
    # setup
    "load_tokenizer", "frozen_text_encoder",
    "tokenizer_from_training_sentences", "prepare_data_root", "build_dataset", "SplitDatasets",
    "seed_everything",
    "environment_info", "resolve_precision", "autocast_dtype", "resolve_num_workers", "SettingsError",
    "check_vision_weights",
    # fitting
    "Trainer", "StopOnSignal", "RunLog", "PhaseTimes", "poly_schedule", "total_steps",
    # the run folder
    "RunLock", "RunFolderError",
    # evaluation
    "evaluate", "evaluation_loader", "blank_sentences", "forward_batch", "unwrap_model", "format_metrics",
    "format_uncertainty", "format_breakdown", "format_reliability", "text_cost", "final_report", "write_metrics",
    "save_panels", "split_names", "PROTOCOL",
    # checkpoints and processes
    "save_checkpoint", "CheckpointWriteError", "load_trainer_state", "find_checkpoint", "read_weights",
    "atomic_write_text",
    "DistEnv", "EpochSampler", "ShardedSampler", "init_distributed", "cleanup_distributed", "main_guard",
    "per_rank_batch", "broadcast_from_main", "broadcast_state",
]
