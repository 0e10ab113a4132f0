"""Settings: one frozen dataclass per stage and command, and the whole pipeline's TOML file.

Names that a registry owns (classifiers, backbones and their poolings, the heads' spatial
reductions and optimizers, augmentations) are read from it, not repeated here.
"""

from .fields import documented, setting
from .loop import DriftConfig, LabelConfig, ReplayConfig, SuggestConfig
from .run import STAGES, RunConfig, load_run_config, run_config_toml
from .stages import (CALIBRATIONS, COMPUTE_PRECISIONS, DECODE_MODES, DTYPES, ENGINES, EXPORT_FORMATS,
                     MAX_FILE_BYTES, MAX_PIXELS, ORIENTATIONS, PRECISIONS, QUANTIZE, REFITS, SCORINGS,
                     CompareConfig, ExportConfig, ExtractConfig, FinetuneConfig, PredictConfig, SplitConfig)

__all__ = ["CALIBRATIONS", "COMPUTE_PRECISIONS", "DECODE_MODES", "DTYPES", "ENGINES", "EXPORT_FORMATS",
           "MAX_FILE_BYTES", "MAX_PIXELS", "ORIENTATIONS", "PRECISIONS", "QUANTIZE", "REFITS", "SCORINGS",
           "STAGES", "CompareConfig", "ExportConfig", "ExtractConfig", "FinetuneConfig", "PredictConfig",
           "RunConfig", "SplitConfig", "DriftConfig", "LabelConfig", "ReplayConfig", "SuggestConfig", "documented", "load_run_config", "run_config_toml", "setting"]
