"""The Ray adapter, and nothing else: start or join Ray (``cluster``), the one trial body (``trial``:
direct or under Ray Train, ``train``), Tune's callback and searcher over the driver's bookkeeping
(``adapters``), the progress lines (``progress``, ``live``), stopping on a signal (``stop``), and the runner that runs any Experiment
(``run``). The trial store and the bookkeeping itself are Ray-free (``raypair.trials``). Import the
submodules; this package imports nothing."""
