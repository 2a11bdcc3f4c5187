"""The public surface of tuneloop.signals: every name in __all__ resolves."""
import tuneloop.signals as signals


def test_all_names_resolve():
    for name in signals.__all__:
        assert getattr(signals, name) is not None
