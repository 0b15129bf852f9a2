"""Validated configuration: pydantic v2 schemas (unknown keys rejected), YAML loading and
``--set dotted.path=value`` overrides. Every error is a one-line :class:`ConfigError` naming the
dotted field and the received value.

- :mod:`raypair.config.base`: the error, the ``Strict`` base, YAML, dicts and dotted paths;
- :mod:`raypair.config.run`: the run config and its parts (``data``, ``optim`` ...); ``model`` in
  :mod:`raypair.config.model`, its names (own nets, the papers' aliases) in :mod:`raypair.config.model_names`;
- :mod:`raypair.config.scale`: how a trial runs and the resources it holds (``scale``);
- :mod:`raypair.config.methods`: each method's config, one module per method;
- :mod:`raypair.config.space`: search-space files;
- :mod:`raypair.config.yamlio`: YAML with limits (no timestamps, depth, alias expansion, duplicate keys).

Nothing here imports torch or timm (``raypair validate`` runs without them); :func:`run_model`
imports the method configs lazily, and a model name raypair does not own is looked up in timm.
"""
from raypair.config.base import (NAME_RULE, ConfigError, Name, Strict, check_name, deep_merge, field_at, flatten,
                                 from_validation, parse_override, read_text, read_yaml, set_path, to_plain)
from raypair.config.run import (METRICS, NOT_SEARCHABLE, DataConfig, DivergenceConfig, MethodConfig, ModelConfig,
                                OptimConfig, RunConfigBase, ScheduleConfig, aug_parts, build_run, load_run, loader_aug,
                                loader_views, reported_metrics, run_model)
from raypair.config.scale import Resources, ScaleConfig
from raypair.config.space import SPACE_KINDS, ParamSpace, SchedulerConfig, SearcherConfig, SpaceFile, TuneSettings

__all__ = ["METRICS", "NAME_RULE", "NOT_SEARCHABLE", "SPACE_KINDS", "ConfigError", "DataConfig", "DivergenceConfig",
           "MethodConfig", "ModelConfig", "Name", "OptimConfig", "ParamSpace", "Resources", "RunConfigBase", "ScaleConfig",
           "ScheduleConfig", "SchedulerConfig", "SearcherConfig", "SpaceFile", "Strict", "TuneSettings", "aug_parts",
           "build_run", "check_name", "deep_merge", "field_at", "flatten", "from_validation", "load_run", "loader_aug",
           "loader_views", "parse_override", "read_text", "read_yaml", "reported_metrics", "run_model", "set_path", "to_plain"]
