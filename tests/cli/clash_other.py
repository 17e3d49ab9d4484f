"""A second model called ``Customer``, in another module (see tests/cli/clash.py)."""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class OtherBase(DeclarativeBase):
    pass


class Customer(OtherBase):
    __tablename__ = "other_customers"
    __bind_key__ = "elsewhere"  # not configured: only this Customer is in error
    id: Mapped[int] = mapped_column(primary_key=True)
