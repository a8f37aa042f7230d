"""Random-set autoencoding (experiment 2): the task (`task`), the paper's grid (`sweep`) and the
inner loop's stability per checkpoint (`diagnostics`). ``python -m experiments.random_sets``
trains one run (see `task`)."""
