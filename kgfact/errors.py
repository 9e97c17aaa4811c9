"""The one exception type for user mistakes.

Anything a researcher can cause by bad input (an unknown relation, a malformed file, an unreachable
endpoint, an empty result) raises :class:`KgfactError`. The CLI prints it as a one-line message and
exits non-zero; any other exception is a bug in kgfact and keeps its traceback.
"""


class KgfactError(Exception):
    """A user-facing error: the message says what is wrong and, where possible, what to do."""
