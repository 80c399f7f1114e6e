"""The stages of a run (generate, reference, extract, cost, collect: stages.py) and the run that chains them."""
