"""The shipped contract suite, run on every backend through the parametrised ``store`` fixture."""

from kodestore.testing import ExtendedContract, QueryContract, StoreContract


class TestStoreContract(StoreContract):
    pass


class TestQueryContract(QueryContract):
    pass


class TestExtendedContract(ExtendedContract):
    pass
