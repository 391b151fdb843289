"""Exception types: every failure a user can cause gets one of these with a message that says what to do."""


class SegQCError(Exception):
    """Base class for errors caused by inputs or environment (not programming errors)."""


class InputError(SegQCError):
    """A file is missing, unreadable, empty, of the wrong dimension or of the wrong value type."""


class GeometryMismatchError(InputError):
    """Image and segmentation (or two images) do not share size, spacing, origin and direction."""


class ModelError(SegQCError):
    """A model package is missing, corrupt, hostile, or does not match the input."""


class CancelledError(SegQCError):
    """The user cancelled a long-running operation."""


class ResourceError(SegQCError):
    """Not enough memory or disk space to complete the operation."""


class OutOfDomainError(SegQCError):
    """A strict run refused to report estimates: the input is unlike the model's training data."""


class WriteError(SegQCError):
    """A file was not written completely: what reading it back found differs from what was meant to be written
    (a full disk or a failing device whose error the writer did not report).  Nothing was replaced."""
