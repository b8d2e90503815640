"""Training and evaluation of the reference model, used by ``examples/``.

One home per concern:

- :mod:`.config` -- :class:`TrainConfig` (training settings), its CLI and config files, and the
  one precedence order: command-line flags > config files > preset recipe > preset defaults;
- :mod:`.setup` -- what a run needs: the model config, the tokenizer, the datasets (through the
  registry of :mod:`uncertainty_rrsis.data`), the synthetic data, seeds, the environment;
- :mod:`.trainer` -- the :class:`Trainer` that fits: steps, accumulation, resume, signals,
  checkpoints, periodic validation, final evaluation;
- :mod:`.evaluation` -- :func:`evaluate` (the field's metrics, exact under DDP, no Trainer
  needed), the text-blanked evaluation, the report and the panels;
- :mod:`.run_folder` -- one run per folder: the folder's lock, the files of a run, the settings a
  resume compares;
- :mod:`.checkpoint`, :mod:`.distributed`, :mod:`.schedule`, :mod:`.signals`, :mod:`.run_log`.
"""

from .checkpoint import atomic_write_text, find_checkpoint, load_trainer_state, save_checkpoint
from .config import (
    DEFAULT_RECIPE,
    MODEL_SHORTCUTS,
    PRESET_RECIPES,
    RESUME_MAY_CHANGE,
    RESUME_MAY_CHANGE_MODEL,
    TrainConfig,
    PRECISIONS,
    SELECT_METRICS,
    build_arg_parser,
    config_files,
    config_from_args,
    load_config_file,
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
    format_uncertainty,
    forward_batch,
    save_panels,
    text_cost,
    unwrap_model,
    write_metrics,
)
from .run_folder import RunFolderError, RunLock
from .run_log import RunLog
from .schedule import poly_schedule
from .setup import (
    autocast_dtype,
    build_dataset,
    build_model_config,
    environment_info,
    load_tokenizer,
    prepare_data_root,
    resolve_num_workers,
    resolve_precision,
    seed_everything,
)
from .signals import StopOnSignal
from .trainer import PRETRAINED_BACKBONE_PRESETS, SettingsError, Trainer, check_vision_weights

__all__ = [
    # settings
    "TrainConfig", "PRESET_RECIPES", "DEFAULT_RECIPE", "MODEL_SHORTCUTS", "build_arg_parser", "config_from_args",
    "load_config_file", "merge_settings", "config_files", "RESUME_MAY_CHANGE", "RESUME_MAY_CHANGE_MODEL",
    "PRECISIONS", "SELECT_METRICS",
    # setup
    "build_model_config", "load_tokenizer", "prepare_data_root", "build_dataset", "seed_everything",
    "environment_info", "resolve_precision", "autocast_dtype", "resolve_num_workers",
    # fitting
    "Trainer", "SettingsError", "check_vision_weights", "PRETRAINED_BACKBONE_PRESETS", "StopOnSignal", "RunLog", "poly_schedule",
    # the run folder
    "RunLock", "RunFolderError",
    # evaluation
    "evaluate", "evaluation_loader", "blank_sentences", "forward_batch", "unwrap_model", "format_metrics", "format_uncertainty",
    "format_breakdown", "text_cost", "final_report", "write_metrics", "save_panels", "PROTOCOL",
    # checkpoints and processes
    "save_checkpoint", "load_trainer_state", "find_checkpoint", "atomic_write_text",
    "DistEnv", "EpochSampler", "ShardedSampler", "init_distributed", "cleanup_distributed", "main_guard",
    "per_rank_batch", "broadcast_from_main", "broadcast_state",
]
