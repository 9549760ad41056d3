"""Prediction and its pictures: images in, detections out through any runtime (``run``), the model a
``--model`` names (``model``), results as COCO JSON and summaries (``results``), drawing (``drawing``)."""
