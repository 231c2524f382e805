"""Models shared by the ORM tests: one auditor, tracked and untracked models."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from whodid import Auditor

auditor = Auditor()


class Base(DeclarativeBase):
    pass


class Status(enum.Enum):
    active = "active"
    frozen = "frozen"


class Opaque:
    """A value no JSON encoder knows, stored with PickleType."""

    def __repr__(self) -> str:
        return "Opaque()"


@auditor.track(feature="customer", exclude={"updated_at"}, redact={"tax_id"}, tenant="org_id")
class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[str | None] = mapped_column(sa.String(20))
    email: Mapped[str] = mapped_column(sa.String(100))
    balance: Mapped[Decimal] = mapped_column(sa.Numeric(12, 2), default=Decimal("0"))
    tax_id: Mapped[str | None] = mapped_column(sa.String(20))
    password_hash: Mapped[str | None] = mapped_column(sa.String(100))
    settings: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    status: Mapped[Status] = mapped_column(sa.Enum(Status), default=Status.active)
    external_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    signed_up: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True))
    birthday: Mapped[dt.date | None] = mapped_column(sa.Date)
    avatar: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    updated_at: Mapped[str | None] = mapped_column(sa.String(40))

    wallets: Mapped[list[Wallet]] = relationship(
        back_populates="customer", cascade="all, delete-orphan"
    )


@auditor.track
class Wallet(Base):
    __tablename__ = "wallets"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(sa.ForeignKey("customers.id"))
    currency: Mapped[str] = mapped_column(sa.String(3))
    customer: Mapped[Customer] = relationship(back_populates="wallets")


@auditor.track(feature="fx")
class Rate(Base):
    """Composite primary key."""

    __tablename__ = "rates"

    base: Mapped[str] = mapped_column(sa.String(3), primary_key=True)
    quote: Mapped[str] = mapped_column(sa.String(3), primary_key=True)
    rate: Mapped[Decimal] = mapped_column(sa.Numeric(18, 8))


@auditor.track
class Blob(Base):
    __tablename__ = "blobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    payload: Mapped[Any] = mapped_column(sa.PickleType)


class Note(Base):
    """Not tracked: must never produce an entry."""

    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str] = mapped_column(sa.Text)


def read_entries(bind: sa.Engine | sa.Connection) -> list[Any]:
    """Every entry in insertion order, as whodid.Entry objects."""
    from whodid import Entry
    from whodid.store.schema import entries

    def run(conn: sa.Connection) -> list[Any]:
        rows = conn.execute(sa.select(entries).order_by(entries.c.seq)).mappings()
        return [Entry.from_row(r) for r in rows]

    if isinstance(bind, sa.Engine):
        with bind.connect() as conn:
            return run(conn)
    return run(bind)
