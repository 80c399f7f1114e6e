"""Models: the adapter contract and family registry (the only importer of model_zoo), cards, knobs, hub weights."""
