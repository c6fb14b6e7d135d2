"""Settlement engine (SPEC §8) — implemented in the money-core issue."""

from sqlalchemy.orm import Session


def settle_customer(session: Session, customer_id: int) -> None:
    raise NotImplementedError("settlement engine lands with the money-core issue")
