"""Keeps TensorFlow's, absl's and Keras's start-up noise out of the CLI's output.

Importing TensorFlow on a CPU machine prints about a dozen lines that say nothing to a
user of ``tcvae-tf`` (the oneDNN notice twice, "Could not find cuda drivers", "failed
call to cuInit", absl's "All log messages before absl::InitializeLog()"); Keras warns
that ``shuffle=True`` is ignored for a tf.data pipeline, and TensorFlow's Python logger
warns about retracing. The CLI hides them unless asked (``tcvae-tf --verbose ...``, or a
``TF_CPP_MIN_LOG_LEVEL`` set by the user): only logging changes, never a numerical
setting (oneDNN stays on).

What is hidden, and how:

```none
TF_CPP_MIN_LOG_LEVEL=2      TensorFlow's C++ INFO and WARNING lines (XLA, CPU features)
import of tensorflow        the lines written to the stderr file descriptor while it
                            is imported and its devices listed are held back, and only
                            the known start-up notices above are dropped (anything
                            else is written out after the import, in order)
Python loggers              "tensorflow" and "absl" at ERROR
warnings                    Keras's "`shuffle=True` was passed, but will be ignored"
```

All of it is undone when the command ends. Library imports (``tcvae_tf``) never change
logging; only the CLI calls this.
"""

import contextlib
import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import tempfile
import warnings

LOG_LEVEL_VAR = "TF_CPP_MIN_LOG_LEVEL"
QUIET_LOG_LEVEL = "2"  # C++ ERROR and FATAL only
QUIET_LOGGERS = ("tensorflow", "absl")
# Start-up lines of TensorFlow (and the libraries it loads) that are dropped while it is
# imported: absl's notice, INFO/WARNING lines in absl's format ("I0000 00:00:17.0  42
# port.cc:153] ..."), and the CUDA errors of a machine without a GPU.
_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] "
    r"|E\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] (failed call to cuInit|Unable to register "
    r"cu\w+ factory)"
    r"|To enable the following instructions: .* rebuild TensorFlow")
_KERAS_SHUFFLE_WARNING = r"`shuffle=True` was passed, but will be ignored"


def is_noise(line):
    """Whether a line written while TensorFlow is imported is a known start-up notice."""
    return bool(_NOISE.match(line))


@contextlib.contextmanager
def filtered_stderr_fd():
    """Holds back what is written to file descriptor 2 and writes it out without noise.

    C++ libraries write to the descriptor directly, past ``sys.stderr``; the lines go to
    an anonymous temporary file and are copied to the real stderr at the end, except
    those ``is_noise`` recognises.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            text = held.read().decode(errors="replace")
            kept = [line for line in text.splitlines(keepends=True) if not is_noise(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """A finder that runs the first import of ``tensorflow`` under ``filtered_stderr_fd``.

    It only wraps the found loader's ``exec_module``; the module, its spec and loader are
    TensorFlow's own. After the import it lists the physical devices, where CUDA's
    start-up errors are printed (listing does not initialise them: device settings such
    as memory growth can still be changed).
    """

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow":
            return None
        remove_finder(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def quiet_exec_module(module):
            with filtered_stderr_fd():
                exec_module(module)
                with contextlib.suppress(Exception):  # only to flush CUDA's messages
                    module.config.list_physical_devices()

        spec.loader.exec_module = quiet_exec_module
        return spec


def remove_finder(finder):
    with contextlib.suppress(ValueError):
        sys.meta_path.remove(finder)


@contextlib.contextmanager
def third_party_output_quieted(verbose=False):
    """Hides TensorFlow/absl/Keras noise for the duration of a CLI command.

    Args:
      verbose: show everything (nothing is changed). A ``TF_CPP_MIN_LOG_LEVEL`` set by
        the user also leaves everything as it is.

    Example:
      >>> with third_party_output_quieted():
      ...     import tensorflow   # no start-up lines
    """
    if verbose or LOG_LEVEL_VAR in os.environ:
        yield
        return
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    finder = None
    os.environ[LOG_LEVEL_VAR] = QUIET_LOG_LEVEL
    try:
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        if "tensorflow" not in sys.modules:
            finder = _QuietTensorFlowImport()
            sys.meta_path.insert(0, finder)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_KERAS_SHUFFLE_WARNING,
                                    category=UserWarning)
            yield
    finally:
        if finder is not None:
            remove_finder(finder)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        if os.environ.get(LOG_LEVEL_VAR) == QUIET_LOG_LEVEL:
            del os.environ[LOG_LEVEL_VAR]
