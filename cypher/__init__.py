"""Every Cypher statement neuronmap runs, as named .cypher files, and the thin code that runs them."""

from .catalog import NamedQuery, all_queries, get
from .errors import (CypherError, QueryHeaderError, QueryParameterError, StoreAuthError, StoreUnavailableError,
                     UnknownQueryError)
from .schema import apply_schema
from .store import Store, Transaction

__all__ = ["NamedQuery", "all_queries", "get", "CypherError", "QueryHeaderError", "QueryParameterError",
           "StoreAuthError", "StoreUnavailableError", "UnknownQueryError", "apply_schema", "Store", "Transaction"]
