"""The shipped contract suite, run on every backend through the parametrised ``store`` fixture."""

from typing import Any

import pytest

from kodestore.testing import ExtendedContract, QueryContract, StoreContract


class TestStoreContract(StoreContract):
    @pytest.fixture
    def store(self, any_store: Any) -> Any:
        """The plain Store contract holds for every store, JSONStore included."""
        return any_store


class TestQueryContract(QueryContract):
    pass


class TestExtendedContract(ExtendedContract):
    pass
