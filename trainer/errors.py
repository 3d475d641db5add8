"""User-facing errors: the CLI and the Space print their message, never a traceback."""


class TrainerError(Exception):
    """An error the user can act on; its message says what is wrong and how to fix it."""


class ConfigError(TrainerError):
    """The configuration is invalid."""


class InputError(TrainerError):
    """The corpus or another input cannot be used."""


class ModelResolutionError(TrainerError):
    """A model name could not be mapped to weights."""


class StageError(TrainerError):
    """A stage cannot run (missing upstream output, refused overwrite, ...)."""
