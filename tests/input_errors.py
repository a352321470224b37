"""Shared check for readers' bad-input errors."""

import pytest

from pipelines.data import InputError


def expect_input_error(reader, path, *words, **kw) -> str:
    """``reader(path, **kw)`` raises an InputError naming ``path`` and containing every word."""
    with pytest.raises(InputError) as err:
        reader(path, **kw)
    message = str(err.value)
    assert str(path) in message
    for word in words:
        assert word in message, message
    return message
