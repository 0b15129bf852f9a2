"""The only Ray code: start or join Ray (``cluster``), the one trial body (``trial``: direct or
under Ray Train, ``train``), the driver's MLflow callback, searcher and progress (``book``), and
the runner that runs any Experiment (``run``). The trial store (``store``) is plain file I/O,
read before Ray starts. Import the submodules; this package imports nothing."""
