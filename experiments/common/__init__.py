"""What the three experiments share: the training loop, checkpoints, batches, pictures, config
checks, the iDSPN layer's options (and DSPN), and the huge-pages re-execution."""
