"""Errors that carry a message meant for a person, not a traceback."""

from __future__ import annotations


class ModelportError(Exception):
    """Base class: the CLI prints the message and exits non-zero."""


class NotFoundError(ModelportError):
    """A model, version or alias that does not exist."""


class InvalidReferenceError(ModelportError):
    """A model reference or name that is not well formed."""


class IntegrityError(ModelportError):
    """An artifact whose bytes do not match the recorded sha256."""


class VerificationError(IntegrityError):
    """An image, SBOM, signature or archive that is not what was built and signed: refused."""


class RegistryError(ModelportError):
    """A registry database that is damaged, or empty while the store holds artifacts."""


class RegistryDamagedError(RegistryError):
    """The registry database file is corrupt or is not a database."""


class RegistryLostError(RegistryError):
    """A new (empty) registry over an existing store's artifact files."""


class UnsafeModelError(ModelportError):
    """A model file that would execute untrusted code when loaded."""


class FrameworkError(ModelportError):
    """A model the framework adapters cannot save, detect or load."""


class ConversionError(FrameworkError):
    """A model that cannot be converted to another runtime, or whose conversion predicts otherwise."""


class DataError(ModelportError):
    """Training data that cannot be used as given."""


class InvalidInputError(ModelportError):
    """Request data a model cannot take as given (the client's to fix)."""


class ModelOutputError(ModelportError):
    """A model that answered with something that is not a prediction, such as NaN or infinity."""


class LimitExceededError(InvalidInputError):
    """Request data over a limit the server sets (images per request, pixels to decode)."""


class ModelNotFoundError(NotFoundError):
    """A model or version that this server does not serve."""


class ModelUnavailableError(ModelportError):
    """A served model that is unloaded (the model repository extension) and takes no requests."""


class ModelFailedError(ModelportError):
    """A model that raised while predicting on valid input: the server's fault, not the client's."""
