"""User-facing errors: one line that names the file, key, value and what was expected."""


class HarnessError(Exception):
    """An error the CLI prints as one line and exits non-zero on (no traceback)."""


class ProtocolError(HarnessError):
    """A protocol file or override is malformed, or asks for something a model cannot honour."""


class ShardError(HarnessError):
    """A shard's images or manifest are missing, corrupt or invalid."""


class GenerationError(HarnessError):
    """A generator produced something that must never be written (NaN, constant frame, wrong shape)."""
