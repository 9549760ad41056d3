"""detrtool core: the DETR model, matcher, losses, post-processing, data, evaluation and training."""
