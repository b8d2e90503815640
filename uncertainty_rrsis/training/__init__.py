"""Training and evaluation machinery used by ``examples/``: loop, schedule, checkpoints, DDP helpers."""

from .checkpoint import find_checkpoint, load_trainer_state, save_checkpoint
from .config import PRESET_RECIPES, TrainConfig, build_arg_parser, config_from_args, load_config_file
from .distributed import DistEnv, EpochSampler, ShardedSampler, cleanup_distributed, init_distributed, per_rank_batch
from .loop import Trainer, build_model_config, format_metrics, load_tokenizer
from .schedule import poly_schedule

__all__ = [
    "TrainConfig", "PRESET_RECIPES", "build_arg_parser", "config_from_args", "load_config_file",
    "DistEnv", "EpochSampler", "ShardedSampler", "init_distributed", "cleanup_distributed", "per_rank_batch",
    "Trainer", "build_model_config", "format_metrics", "load_tokenizer",
    "poly_schedule", "save_checkpoint", "load_trainer_state", "find_checkpoint",
]
