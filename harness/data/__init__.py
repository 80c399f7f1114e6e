"""Package data: the committed ImageNet label table (see harness/labels.py)."""
