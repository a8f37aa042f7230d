"""Class-specific numbering (experiment 1): the data (`data`), iDSPN, DSPN and the baselines
(`models`), the task (`task`) and the poster's table over every model (`table`).
``python -m experiments.numbering`` trains one run (see `task`)."""
