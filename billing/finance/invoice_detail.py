"""Everything the invoice page shows: the invoice, its customer, dunning case and emails."""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core import money
from billing.core.context import AppContext
from billing.credit_notes.models import CreditNote
from billing.customers.models import Customer
from billing.dunning.cases import cases_out
from billing.dunning.models import DunningCase
from billing.dunning.schemas import CaseOut
from billing.invoicing import invoices
from billing.invoicing.schemas import InvoiceOut, LineOut
from billing.notifications.models import Notification
from billing.payments.views import PAYMENTS
from billing.tenants.models import ApiKey, TaxRate


@dataclass(frozen=True)
class Action:
    name: str
    label: str
    allowed_from: tuple[str, ...]
    warning: str


ACTIONS = {
    action.name: action
    for action in (
        Action(
            "finalize",
            "Finalize",
            ("draft",),
            "Finalizing numbers the invoice, freezes its lines and starts collecting payment.",
        ),
        Action(
            "pay",
            "Retry charge",
            ("open",),
            "The customer's saved payment method is charged now for the amount due.",
        ),
        Action(
            "void",
            "Void",
            ("draft", "open"),
            "A void invoice is never collected. This cannot be undone.",
        ),
        Action(
            "mark-uncollectible",
            "Mark uncollectible",
            ("open",),
            "Collection stops, dunning ends, and the amount is written off. This cannot be undone.",
        ),
    )
}


CHARGE_NOW = Action(
    "pay", "Charge now", ("open",), "The customer's saved payment method is charged now for the amount due."
)


@dataclass(frozen=True)
class InvoicePage:
    invoice: InvoiceOut
    customer: Customer
    case: CaseOut | None
    notifications: list[Notification]
    key_names: dict[str, str]
    # Tax rate id -> "VAT 19%" (filled in from the tenant's tax rates).
    tax_labels: dict[str, str] = field(default_factory=dict)
    # Oldest first, as they were issued.
    credit_notes: list[CreditNote] = field(default_factory=list)

    def tax_label(self, tax_rate: str) -> str:
        return self.tax_labels.get(tax_rate, f"Tax ({tax_rate})")

    @property
    def has_line_amounts(self) -> bool:
        """Whether any line carries a discount share or tax (the lines table then shows both)."""
        return any(line.discount_amounts or line.tax_amounts for line in self.invoice.lines)

    @property
    def credit_notes_total(self) -> int:
        return self.invoice.pre_payment_credit_notes_amount + self.invoice.post_payment_credit_notes_amount

    @property
    def net_of_credit_notes(self) -> int:
        """What the invoice counts as revenue: its total less every credit note."""
        return self.invoice.total - self.credit_notes_total

    def credited_after_payment(self, refund: str) -> int:
        """What the notes of one refund kind gave back after payment."""
        return sum(note.post_payment_amount for note in self.credit_notes if note.refund == refund)

    @staticmethod
    def line_discount(line: LineOut) -> int:
        return sum(share.amount for share in line.discount_amounts)

    @staticmethod
    def line_tax(line: LineOut) -> int:
        return sum(tax.amount for tax in line.tax_amounts)

    def actor(self, actor: str) -> str:
        """Who changed the status, as a person reads it: the scheduler, or which API key."""
        if actor == invoices.SCHEDULER:
            return "the scheduler"
        kind, _, payment_id = actor.partition(":")
        if kind == "payment" and payment_id:
            return f"payment {payment_id}"
        return self.key_names.get(actor, actor)

    @property
    def actions(self) -> list[Action]:
        allowed = [action for action in ACTIONS.values() if self.invoice.status in action.allowed_from]
        if not self.invoice.payments:  # nothing to retry yet
            allowed = [CHARGE_NOW if action.name == "pay" else action for action in allowed]
        return allowed


async def load(ctx: AppContext, tenant_id: str, invoice_id: str) -> InvoicePage:
    async with ctx.database.read() as session:
        invoice = await invoices.get_invoice(session, tenant_id, invoice_id)
        out = (await invoices.invoices_out(session, [invoice], PAYMENTS, now=ctx.clock.now()))[0]
        customer = await session.get_one(Customer, invoice.customer_id)
        case = await session.scalar(sa.select(DunningCase).where(DunningCase.invoice_id == invoice.id))
        case_out = (await cases_out(session, [case]))[0] if case is not None else None
        notes = await session.scalars(
            sa.select(Notification).where(Notification.invoice_id == invoice.id).order_by(Notification.id)
        )
        actors = {change.actor for change in out.status_transitions}
        keys = await session.execute(
            sa.select(ApiKey.id, ApiKey.scope, ApiKey.name).where(ApiKey.id.in_(actors))
        )
        names = {key_id: f"{scope} key “{name or key_id}” ({key_id})" for key_id, scope, name in keys}
        credit_notes = await session.scalars(
            sa.select(CreditNote)
            .where(CreditNote.tenant_id == tenant_id, CreditNote.invoice_id == invoice.id)
            .order_by(CreditNote.created_at, CreditNote.number)
        )
        labels = await _tax_labels(session, tenant_id, out)
        return InvoicePage(out, customer, case_out, list(notes), names, labels, list(credit_notes))


async def _tax_labels(session: AsyncSession, tenant_id: str, invoice: InvoiceOut) -> dict[str, str]:
    """ "VAT 19%" for each rate the invoice was taxed at."""
    ids = {tax.tax_rate for tax in invoice.total_tax_amounts}
    if not ids:
        return {}
    rates = await session.scalars(
        sa.select(TaxRate).where(TaxRate.tenant_id == tenant_id, TaxRate.id.in_(ids))
    )
    return {rate.id: f"{rate.display_name} {money.format_decimal(rate.percentage)}%" for rate in rates}
