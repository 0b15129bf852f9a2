"""What to run: a search space (``sweep``), an ablation file (``ablation``) or one run (``single``),
each an implementation of the one ``Experiment`` interface in ``base``, each file kind a row of the
table of kinds in ``kinds`` (plug-ins: entry-point group ``raypair.kinds``). Nothing here imports Ray
or MLflow: the runner (``raypair.runner``) runs any Experiment."""
