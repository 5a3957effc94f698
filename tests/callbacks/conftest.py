import pytest

from tests.helpers import fit_tiny


@pytest.fixture(scope="module")
def tiny_run(tiny_net, tmp_path_factory):
    """A 2-epoch fit of the tiny net with every dashboard callback: (root, trainer, model, data)."""
    root = tmp_path_factory.mktemp("dash")
    trainer, model, data = fit_tiny(root, "tiny")
    return root, trainer, model, data
