"""Evaluation: the COCO box evaluator (pycocotools or faster-coco-eval, ``coco``) and the COCO ground
truth of any dataset source (``ground_truth``)."""
