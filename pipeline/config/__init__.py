"""Settings: one frozen dataclass per stage, and the whole pipeline's TOML file."""

from .fields import documented, setting
from .run import STAGES, RunConfig, load_run_config, run_config_toml
from .stages import (CALIBRATIONS, COMPUTE_PRECISIONS, DECODE_MODES, DEFAULT_BACKBONE, DTYPES, ENGINES, EXPORT_FORMATS, MAX_FILE_BYTES, MAX_PIXELS,
                     OPTIMIZERS, ORIENTATIONS, POOLINGS, PRECISIONS, QUANTIZE, REFITS, SCORINGS, SPATIAL,
                     CompareConfig, ExtractConfig, FinetuneConfig, SplitConfig)

__all__ = ["CALIBRATIONS", "COMPUTE_PRECISIONS", "DECODE_MODES", "DEFAULT_BACKBONE", "DTYPES", "ENGINES", "MAX_FILE_BYTES", "MAX_PIXELS",
           "OPTIMIZERS", "ORIENTATIONS", "POOLINGS", "PRECISIONS", "REFITS", "SCORINGS", "SPATIAL",
           "STAGES", "CompareConfig", "ExtractConfig", "FinetuneConfig", "RunConfig", "SplitConfig",
           "documented", "load_run_config", "run_config_toml", "setting"]
