"""Training: the run (``run.train``), the epoch loop (``engine``), its configuration (``train_config``),
optimiser and schedule (``optim``), backbone crop pre-training, the evaluation run of a checkpoint
(``eval_run``), torchrun/DDP set-up (``distributed``), the log kept whole across kills (``run_log``) and
the output folder's lock and temp-file cleanup (``output_dir``)."""
