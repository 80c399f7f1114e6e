"""Generator families. Each module registers one adapter with ``@harness.models.adapters.register``.

Model cards (named checkpoints of a family) live in ``model_zoo/cards/*.yaml``.
"""
