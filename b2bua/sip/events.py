"""Events the transaction layer hands to the transaction user (the call engine)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .message import Request, Response
    from .transaction import ClientTransaction, ServerTransaction


@dataclass(slots=True)
class RequestReceived:
    """A new request (not a retransmission); ``txn`` is None for an ACK to a 2xx."""

    request: Request
    source: Any
    txn: ServerTransaction | None


@dataclass(slots=True)
class ResponseReceived:
    """A response for a client transaction (or a 2xx retransmission in Accepted)."""

    response: Response
    txn: ClientTransaction


@dataclass(slots=True)
class StrayResponse:
    """A response that matches no transaction (a late 2xx retransmission, say)."""

    response: Response
    source: Any


@dataclass(slots=True)
class TransactionTimeout:
    """Timer B/F fired for a client transaction, or timer H (no ACK) for a server one."""

    txn: ClientTransaction | ServerTransaction


@dataclass(slots=True)
class TransportError:
    """Sending for this transaction failed."""

    txn: ClientTransaction | ServerTransaction


Event = RequestReceived | ResponseReceived | StrayResponse | TransactionTimeout | TransportError
