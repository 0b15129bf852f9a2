"""The trials of an experiment, without Ray: the trial store (``store``: the one record of what each
trial did, and so the one truth ``--resume`` reads) and the driver's bookkeeping (``book``: each
trial's run resolved once, its store, its MLflow run, the searcher told in order), what code a run
ran (``provenance``), the ``--resume`` checks of the experiment's databases (``databases``) and what
counts as a fault of the storage (``faults``). ``raypair.runner``
adapts these to Ray Tune; ``raypair status`` reads the store alone. Import the submodules."""
