"""Every Cypher statement neuronmap runs, as named .cypher files, and the thin code that runs them."""

from neuronmap.cypher.adhoc import AdHocResult, AdHocStatement
from neuronmap.cypher.catalog import NamedQuery, all_queries, get
from neuronmap.cypher.errors import (
    AdHocParameterError,
    AdHocStatementError,
    CypherError,
    QueryHeaderError,
    QueryParameterError,
    StoreAuthError,
    StoreUnavailableError,
    UnknownQueryError,
)
from neuronmap.cypher.schema import apply_schema
from neuronmap.cypher.store import Store, Transaction

__all__ = [
    "AdHocResult",
    "AdHocStatement",
    "AdHocParameterError",
    "AdHocStatementError",
    "NamedQuery",
    "all_queries",
    "get",
    "CypherError",
    "QueryHeaderError",
    "QueryParameterError",
    "StoreAuthError",
    "StoreUnavailableError",
    "UnknownQueryError",
    "apply_schema",
    "Store",
    "Transaction",
]
