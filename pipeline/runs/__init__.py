"""A run folder: its manifest and saved models, the metrics and leaderboard, the plots."""

from .folder import MANIFEST, RunWriter, add_model, check_writable, default_run_dir, load_model, read_manifest

__all__ = ["MANIFEST", "RunWriter", "add_model", "check_writable", "default_run_dir", "load_model",
           "read_manifest"]
