"""MLflow, and only here: the store a sweep or ablation writes (``store.Tracker``) and what reports
read back (``read``). No other raypair module imports mlflow."""
from raypair.tracking.store import Tracker, default_uri, git_sha, view_route

__all__ = ["Tracker", "default_uri", "git_sha", "view_route"]
