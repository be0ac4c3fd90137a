"""The one name-lookup idiom: the value of a known name, one line listing the names otherwise."""

import pytest

from visionax import registry
from visionax.errors import UserError

TABLE = {"sgd": 1, "adam": 2}


def test_lookup():
    assert registry.lookup(TABLE, "adam", "optimizer") == 2
    with pytest.raises(UserError, match="^unknown optimizer 'adamw'; choose one of sgd, adam$"):
        registry.lookup(TABLE, "adamw", "optimizer")
    with pytest.raises(UserError, match="unknown optimizer None"):
        registry.lookup(TABLE, None, "optimizer")


def test_lookup_many_from_a_comma_list_or_a_sequence():
    assert registry.lookup_many(TABLE, "adam, sgd", "optimizer", "optimizers") == {"adam": 2, "sgd": 1}
    assert list(registry.lookup_many(TABLE, ("sgd",), "optimizer", "optimizers")) == ["sgd"]
    with pytest.raises(UserError, match="unknown optimizer 'x' in config.optimizers; use a comma-separated"):
        registry.lookup_many(TABLE, "sgd,x", "optimizer", "optimizers")
    with pytest.raises(UserError, match="config.optimizers is empty"):
        registry.lookup_many(TABLE, " , ", "optimizer", "optimizers")
