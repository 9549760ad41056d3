"""Training: the run (``run.train``), the epoch loop (``engine``), its configuration (``train_config``),
optimiser and schedule (``optim``), backbone crop pre-training, the evaluation run of a checkpoint
(``eval_run``) and torchrun/DDP set-up (``distributed``)."""
