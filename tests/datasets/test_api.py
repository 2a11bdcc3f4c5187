"""The public surface: every name in __all__ resolves; the seed's names come from tuneloop."""
import tuneloop
import tuneloop.datasets as datasets


def test_all_names_resolve():
    for name in datasets.__all__:
        assert getattr(datasets, name) is not None
    assert tuneloop.TrainingDataGenerator is datasets.TrainingDataGenerator
    assert tuneloop.DataGeneratorConfig is datasets.DataGeneratorConfig
