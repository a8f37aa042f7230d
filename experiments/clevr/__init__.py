"""CLEVR object property prediction (experiment 3): the task (`task`), its data (`scenes`,
`data`, the synthetic renderer `render`), image encoders (`encoders`), pictures (`plots`) and a
probe of what the pictures show (`probe`). ``python -m experiments.clevr`` trains one run."""
