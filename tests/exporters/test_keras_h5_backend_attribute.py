"""keras-h5's ``backend`` attribute follows what the transforms did to the kernels, not the backend's name.

Keras 2 and tf_keras rotate every convolution kernel on loading when the
file's ``backend`` and their own differ and one of them is ``theano``, so
the attribute must say ``theano`` exactly when the kernels were flipped.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

import caffeport
from caffeport.transforms import BACKENDS, register_backend
from tests.exporters.format_helpers import reference_files, write_with


def _written(backend: str, tmp_path: Path) -> tuple[caffeport.Net, str]:
    net = caffeport.transform(caffeport.read(*reference_files("a_lenet")), backend)
    path = write_with(net, tmp_path / f"{backend}.h5", "keras-h5")
    with h5py.File(path, "r") as f:
        value = f.attrs["backend"]
        return net, value.decode() if isinstance(value, bytes) else str(value)


@pytest.mark.parametrize(("backend", "attribute"), [("tensorflow", "tensorflow"), ("channels_first", "tensorflow"),
                                                    ("theano", "theano"), ("cntk", "cntk")])
def test_the_attribute_of_each_keras_backend(backend: str, attribute: str, tmp_path: Path) -> None:
    net, written = _written(backend, tmp_path)
    assert written == attribute
    assert net.conversion.kernels_flipped == (backend == "theano")


def test_a_backend_of_another_name_that_flips_kernels_is_written_as_theano(tmp_path: Path) -> None:
    """A user's backend made of Theano's passes: its kernels are Theano's, so the file must say so."""
    register_backend("test_my_theano", BACKENDS["theano"], replace=True)
    try:
        net, written = _written("test_my_theano", tmp_path)
    finally:
        del BACKENDS["test_my_theano"]
    assert written == "theano" and net.conversion.kernels_flipped
    plain = caffeport.transform(caffeport.read(*reference_files("a_lenet")), "channels_first")
    flipped, kept = net.layer("conv1").blobs[0], plain.layer("conv1").blobs[0]
    np.testing.assert_array_equal(np.asarray(flipped), np.asarray(kept)[::-1, ::-1])  # the flip the attribute names
