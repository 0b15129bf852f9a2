"""What to run: a search space (``sweep``), an ablation file (``ablation``) or one run (``single``),
each an implementation of the one ``Experiment`` interface in ``base``. Nothing here imports Ray or
MLflow: the runner (``raypair.runner``) runs any Experiment."""
