"""The pytest configuration: the project's warnings are errors, known third-party ones ignored."""

import warnings

import pytest

KNOWN_THIRD_PARTY = [
    ("distutils Version classes are deprecated. Use packaging.version instead.",
     DeprecationWarning, "tensorflow_probability.python"),
    ("__array__ implementation doesn't accept a copy keyword, so passing copy=False failed.",
     DeprecationWarning, "keras.src.backend.tensorflow.core"),
    ("`shuffle=True` was passed, but will be ignored since the data `x` was provided as a "
     "tf.data.Dataset.", UserWarning, "keras.src.trainers.epoch_iterator"),
]


def warn_from(module, message="something", category=UserWarning):
    warnings.warn_explicit(message, category, f"{module.replace('.', '/')}.py", 1, module=module)


@pytest.mark.parametrize("module", ["tcvae_tf.zoo", "tcvae_tf.cli.main", "test_zoo", "conftest"])
def test_the_projects_own_warnings_are_errors(module):
    with pytest.raises(UserWarning, match="something"):
        warn_from(module)
    with pytest.raises(DeprecationWarning):
        warn_from(module, category=DeprecationWarning)


def test_known_third_party_warnings_are_ignored_by_name():
    with warnings.catch_warnings(record=True) as caught:
        for message, category, module in KNOWN_THIRD_PARTY:
            warn_from(module, message, category)
        warn_from("keras.src.somewhere", "a new warning")  # unknown: still shown
    assert [str(warning.message) for warning in caught] == ["a new warning"]
