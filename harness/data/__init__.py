"""Package data: the committed ImageNet label table (see harness/datasets/labels.py)."""
