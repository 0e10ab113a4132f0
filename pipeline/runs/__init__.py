"""A run folder: its manifest and saved models, the metrics and leaderboard, the plots."""

from .folder import (FINETUNED, MANIFEST, WORK, RunWriter, check_writable, default_run_dir, load_model,
                     read_leaderboard, read_manifest)

__all__ = ["FINETUNED", "MANIFEST", "WORK", "RunWriter", "check_writable", "default_run_dir", "load_model",
           "read_leaderboard", "read_manifest"]
